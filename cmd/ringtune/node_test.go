package main

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/kernels/device"
)

func TestNodeDeviceFlag(t *testing.T) {
	clearLauncherEnv(t)
	spec, err := deviceFlag(nodeContext(t))
	require.NoError(t, err)
	assert.Equal(t, device.Spec{Kind: device.CPU}, spec, "default --device")

	spec, err = deviceFlag(nodeContext(t, "--device", "cuda:1"))
	if device.CUDABuilt {
		require.NoError(t, err)
		assert.Equal(t, device.Spec{Kind: device.CUDA, Index: 1}, spec)
	} else {
		require.Error(t, err)
		assert.Contains(t, err.Error(), "--device cuda:1: this ringtune binary was built with -tags nocuda")
	}

	_, err = deviceFlag(nodeContext(t, "--device", "gpu"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), `invalid --device "gpu": use cpu, cuda or cuda:N`)
}

func TestNodeKernelCacheFlag(t *testing.T) {
	clearLauncherEnv(t)
	assert.Equal(t, "/tmp/kernels", nodeContext(t, "--kernel-cache", "/tmp/kernels").String("kernel-cache"))
	assert.Empty(t, nodeContext(t).String("kernel-cache"), "the default is resolved by package device")
}

func TestLocalNodeDevice(t *testing.T) {
	cases := []struct {
		spec device.Spec
		rank int
		want string
	}{
		{device.Spec{Kind: device.CPU}, 1, "cpu"},
		{device.Spec{Kind: device.CUDA, Index: -1}, 0, "cuda:0"},
		{device.Spec{Kind: device.CUDA, Index: -1}, 3, "cuda:3"},
		{device.Spec{Kind: device.CUDA, Index: 2}, 3, "cuda:2"},
	}
	for _, tc := range cases {
		assert.Equal(t, tc.want, localNodeDevice(tc.spec, tc.rank).String(), "%s, rank %d", tc.spec, tc.rank)
	}
}

func TestNodeWithoutGPUFailsBeforeJoin(t *testing.T) {
	if err := device.Probe(device.Spec{Kind: device.CUDA, Index: 0}); err == nil {
		t.Skip("this host has a usable CUDA device")
	}
	dir := t.TempDir()
	job := writeTrainJob(t, dir, trainJob{mode: "lora", base: newTrainBase(t), train: writeTrainData(t, dir, 20), output: filepath.Join(dir, "out"), nodes: 2, micro: 1, accum: 1, steps: 2})

	// No coordinator listens at the address: a node that joined first would
	// wait for it until the join timeout.
	t.Setenv("RINGTUNE_JOB_TOKEN", "no-gpu-test")
	begin := time.Now()
	_, stderr, err := runCLI(t, "node", "--config", job, "--coordinator", freeAddr(t), "--device", "cuda:0")
	require.Error(t, err)
	assert.Contains(t, stderr, "--device cuda:0")
	assert.Less(t, time.Since(begin), 20*time.Second, "the node should fail before it joins")
}
