package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/urfave/cli/v2"

	"github.com/ringtune/ringtune/jobconfig"
)

// launcherEnv lists the variables that torchrun and the Kubeflow training
// operator set and that a node reads.
var launcherEnv = []string{
	"RANK", "PET_NODE_RANK", "WORLD_SIZE", "PET_NNODES",
	"MASTER_ADDR", "MASTER_PORT", "PET_MASTER_ADDR", "PET_MASTER_PORT",
	"RINGTUNE_COORDINATOR",
}

// clearLauncherEnv unsets every variable of launcherEnv for the test, so that
// the environment the tests run in does not leak into the cases. It unsets
// rather than empties them because urfave/cli stops at the first variable of
// a flag's EnvVars that exists, even when it is empty.
func clearLauncherEnv(t *testing.T) {
	t.Helper()
	for _, name := range launcherEnv {
		t.Setenv(name, "") // registers the restore of the old value
		require.NoError(t, os.Unsetenv(name))
	}
}

// nodeContext parses args with the node command's real flags and returns the
// context that its action would get.
func nodeContext(t *testing.T, args ...string) *cli.Context {
	t.Helper()
	var got *cli.Context
	cmd := nodeCommand()
	cmd.Action = func(c *cli.Context) error {
		got = c
		return nil
	}
	app := &cli.App{Name: "ringtune", Commands: []*cli.Command{cmd}}
	require.NoError(t, app.Run(append([]string{"ringtune", "node", "--config", "job.yaml"}, args...)))
	require.NotNil(t, got)
	return got
}

func TestRankFromEnv(t *testing.T) {
	cases := []struct {
		name string
		env  map[string]string
		args []string
		want int
	}{
		{name: "unset", want: -1},
		{name: "RANK", env: map[string]string{"RANK": "2"}, want: 2},
		{name: "PET_NODE_RANK", env: map[string]string{"PET_NODE_RANK": "3"}, want: 3},
		{name: "RANK wins", env: map[string]string{"RANK": "1", "PET_NODE_RANK": "3"}, want: 1},
		{name: "flag wins", env: map[string]string{"RANK": "1", "PET_NODE_RANK": "3"}, args: []string{"--rank", "0"}, want: 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clearLauncherEnv(t)
			for name, value := range tc.env {
				t.Setenv(name, value)
			}
			c := nodeContext(t, tc.args...)
			assert.Equal(t, tc.want, c.Int("rank"))
		})
	}
}

func TestWorldSizeFromEnv(t *testing.T) {
	cases := []struct {
		name    string
		env     map[string]string
		want    int
		wantOK  bool
		wantErr string
	}{
		{name: "unset"},
		{name: "WORLD_SIZE", env: map[string]string{"WORLD_SIZE": "4"}, want: 4, wantOK: true},
		{name: "PET_NNODES", env: map[string]string{"PET_NNODES": "3"}, want: 3, wantOK: true},
		{name: "PET_NNODES fixed range", env: map[string]string{"PET_NNODES": "2:2"}, want: 2, wantOK: true},
		{name: "WORLD_SIZE wins", env: map[string]string{"WORLD_SIZE": "4", "PET_NNODES": "3"}, want: 4, wantOK: true},
		{name: "elastic range", env: map[string]string{"PET_NNODES": "1:4"}, wantErr: `invalid PET_NNODES "1:4"`},
		{name: "PET_NNODES zero", env: map[string]string{"PET_NNODES": "0"}, wantErr: `invalid PET_NNODES "0"`},
		{name: "PET_NNODES text", env: map[string]string{"PET_NNODES": "four"}, wantErr: `invalid PET_NNODES "four"`},
		{name: "bad WORLD_SIZE", env: map[string]string{"WORLD_SIZE": "-1", "PET_NNODES": "2"}, wantErr: `invalid WORLD_SIZE "-1"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clearLauncherEnv(t)
			for name, value := range tc.env {
				t.Setenv(name, value)
			}
			n, ok, err := worldSizeFromEnv()
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.wantOK, ok)
			assert.Equal(t, tc.want, n)
		})
	}
}

func TestCoordinatorAddressFromEnv(t *testing.T) {
	cases := []struct {
		name       string
		env        map[string]string
		args       []string
		configured string
		want       string
		wantErr    string
	}{
		{name: "default", want: "127.0.0.1:29400"},
		{name: "config", configured: "10.1.2.3:1234", want: "10.1.2.3:1234"},
		{name: "MASTER_ADDR only", env: map[string]string{"MASTER_ADDR": "master"}, configured: "10.1.2.3:1234", want: "master:29400"},
		{name: "torchrun names", env: map[string]string{"MASTER_ADDR": "master", "MASTER_PORT": "2000"}, want: "master:2000"},
		{name: "Kubeflow names", env: map[string]string{"PET_MASTER_ADDR": "pet-master", "PET_MASTER_PORT": "3000"}, want: "pet-master:3000"},
		{name: "torchrun names win", env: map[string]string{
			"MASTER_ADDR": "master", "MASTER_PORT": "2000", "PET_MASTER_ADDR": "pet-master", "PET_MASTER_PORT": "3000",
		}, want: "master:2000"},
		{name: "mixed names", env: map[string]string{"MASTER_ADDR": "master", "PET_MASTER_PORT": "3000"}, want: "master:3000"},
		{name: "PET_MASTER_PORT without an address", env: map[string]string{"PET_MASTER_PORT": "3000"}, want: "127.0.0.1:29400"},
		{name: "RINGTUNE_COORDINATOR wins", env: map[string]string{"RINGTUNE_COORDINATOR": "rc:1", "PET_MASTER_ADDR": "pet-master"}, want: "rc:1"},
		{name: "flag wins", env: map[string]string{"RINGTUNE_COORDINATOR": "rc:1"}, args: []string{"--coordinator", "flag:2"}, want: "flag:2"},
		{name: "IPv6 address", env: map[string]string{"PET_MASTER_ADDR": "fd00::1", "PET_MASTER_PORT": "3000"}, want: "[fd00::1]:3000"},
		{name: "bad MASTER_PORT", env: map[string]string{"MASTER_ADDR": "master", "MASTER_PORT": "tcp://10.0.0.1:29400"}, wantErr: `invalid MASTER_PORT "tcp://10.0.0.1:29400"`},
		{name: "bad PET_MASTER_PORT", env: map[string]string{"PET_MASTER_ADDR": "m", "PET_MASTER_PORT": "70000"}, wantErr: `invalid PET_MASTER_PORT "70000"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clearLauncherEnv(t)
			for name, value := range tc.env {
				t.Setenv(name, value)
			}
			c := nodeContext(t, tc.args...)
			job := jobconfig.Default()
			job.Cluster.Coordinator = tc.configured
			got, err := coordinatorAddress(c, job)
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

// runNodeWithEnv runs `ringtune node` on a config whose model and data do not
// exist, with only PATH, the job token and extra in its environment, and
// returns stderr and the exit error. Each case fails before it reads a file.
func runNodeWithEnv(t *testing.T, extra ...string) (string, error) {
	t.Helper()
	config := filepath.Join(t.TempDir(), "job.yaml")
	require.NoError(t, os.WriteFile(config, []byte(`mode: lora
model:
  base: /nonexistent/Qwen3-0.6B
data:
  train: /nonexistent/train.jsonl
cluster:
  nodes: 2
`), 0o644))
	cmd := exec.Command(ringtuneBin, "node", "--config", config)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "RINGTUNE_JOB_TOKEN=test-token"}, extra...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	return stderr.String(), err
}

func TestNodeRejectsBadKubeflowEnv(t *testing.T) {
	cases := []struct {
		name    string
		env     []string
		wantErr string
	}{
		{name: "elastic PET_NNODES", env: []string{"PET_NNODES=1:3"}, wantErr: `invalid PET_NNODES "1:3"`},
		{name: "negative PET_NODE_RANK", env: []string{"PET_NODE_RANK=-5"}, wantErr: "invalid --rank, RANK or PET_NODE_RANK -5"},
		{name: "bad PET_MASTER_PORT", env: []string{"PET_MASTER_ADDR=127.0.0.1", "PET_MASTER_PORT=abc"}, wantErr: `invalid PET_MASTER_PORT "abc"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stderr, err := runNodeWithEnv(t, tc.env...)
			require.Error(t, err, stderr)
			assert.Contains(t, stderr, tc.wantErr)
		})
	}
}

// TestNodeWorldSizeFromPetNNodes checks that PET_NNODES reaches the job config
// that the node logs before it reads the model, and that WORLD_SIZE wins over it.
func TestNodeWorldSizeFromPetNNodes(t *testing.T) {
	stderr, err := runNodeWithEnv(t, "PET_NNODES=3", "PET_NODE_RANK=2")
	require.Error(t, err, "the model does not exist, so the node must fail")
	assert.Contains(t, stderr, `nodes: 3\n`, "the logged config should have cluster.nodes 3")
	assert.Contains(t, stderr, "/nonexistent/Qwen3-0.6B not found", "the node should fail on the missing model")

	stderr, err = runNodeWithEnv(t, "WORLD_SIZE=4", "PET_NNODES=3")
	require.Error(t, err, "the model does not exist, so the node must fail")
	assert.Contains(t, stderr, `nodes: 4\n`, "WORLD_SIZE should win over PET_NNODES")
}
