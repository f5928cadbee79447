package k8s

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/ringtune/ringtune/jobconfig"
)

// Names that the resources share and that the binary's environment expects.
const (
	coordinatorName = "ringtune-coordinator"
	nodeJobName     = "ringtune-node"
	nodeServiceName = "ringtune-nodes"
	configMapName   = "ringtune-job"
	tokenSecretName = "ringtune-job-token"
	tokenEnv        = "RINGTUNE_JOB_TOKEN"
	completionIndex = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
	nonRootUID      = 65532
)

// binaryEnv lists the variables ringtune reads that the manifests set.
var binaryEnv = []string{"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", tokenEnv}

// expansionEnv lists variables that exist only for $(NAME) expansion in args.
var expansionEnv = []string{"POD_NAME", "POD_IP", "JOB_NAME", "NODE_SERVICE"}

// commandHelp holds the output of `ringtune node --help` and
// `ringtune coordinator --help`, by command; TestMain fills it.
var commandHelp = map[string]string{}

func TestMain(m *testing.M) {
	code, err := runWithBinary(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(code)
}

// runWithBinary builds ringtune, reads the help of its node and coordinator
// commands and runs the tests.
func runWithBinary(m *testing.M) (int, error) {
	dir, err := os.MkdirTemp("", "ringtune-k8s-test")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "ringtune")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/ringtune")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("build ringtune: %v\n%s", err, out)
	}
	for _, command := range []string{"node", "coordinator"} {
		out, err := exec.Command(bin, command, "--help").CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("ringtune %s --help: %v\n%s", command, err, out)
		}
		commandHelp[command] = string(out)
	}
	return m.Run(), nil
}

// flagPattern matches each flag name at the start of an option line of the
// help, and its aliases after a comma.
var flagPattern = regexp.MustCompile(`(?m)^\s+(--?[a-z][a-z0-9-]*)(?:[^,\n]*, (--?[a-z][a-z0-9-]*))?`)

// helpFlags returns the flag names, with dashes, that a command's help lists.
func helpFlags(t *testing.T, command string) map[string]bool {
	t.Helper()
	flags := map[string]bool{}
	for _, m := range flagPattern.FindAllStringSubmatch(commandHelp[command], -1) {
		flags[m[1]] = true
		if m[2] != "" {
			flags[m[2]] = true
		}
	}
	require.True(t, flags["--config"], "the help of %s should list --config:\n%s", command, commandHelp[command])
	return flags
}

// manifests are the rendered objects of one kustomization, decoded into the
// Kubernetes API types.
type manifests struct {
	services   map[string]*corev1.Service
	jobs       map[string]*batchv1.Job
	configMaps map[string]*corev1.ConfigMap
	secrets    map[string]*corev1.Secret
	claims     map[string]*corev1.PersistentVolumeClaim
}

// render runs kustomize on dir and decodes every object strictly, so that a
// misspelt or misplaced field fails the test.
func render(t *testing.T, dir string) *manifests {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resources, err := k.Run(filesys.MakeFsOnDisk(), dir)
	require.NoError(t, err, "kustomize build %s", dir)

	m := &manifests{
		services:   map[string]*corev1.Service{},
		jobs:       map[string]*batchv1.Job{},
		configMaps: map[string]*corev1.ConfigMap{},
		secrets:    map[string]*corev1.Secret{},
		claims:     map[string]*corev1.PersistentVolumeClaim{},
	}
	for _, r := range resources.Resources() {
		raw, err := r.AsYAML()
		require.NoError(t, err)
		kind, name := r.GetKind(), r.GetName()
		var target any
		switch kind {
		case "Service":
			obj := &corev1.Service{}
			m.services[name], target = obj, obj
		case "Job":
			obj := &batchv1.Job{}
			m.jobs[name], target = obj, obj
		case "ConfigMap":
			obj := &corev1.ConfigMap{}
			m.configMaps[name], target = obj, obj
		case "Secret":
			obj := &corev1.Secret{}
			m.secrets[name], target = obj, obj
		case "PersistentVolumeClaim":
			obj := &corev1.PersistentVolumeClaim{}
			m.claims[name], target = obj, obj
		default:
			t.Fatalf("%s renders a %s %s, which the test does not check", dir, kind, name)
		}
		require.NoError(t, yaml.UnmarshalStrict(raw, target), "decode %s %s strictly:\n%s", kind, name, raw)
	}
	return m
}

// job returns the rendered Job called name and its only container.
func (m *manifests) job(t *testing.T, name string) (*batchv1.Job, *corev1.Container) {
	t.Helper()
	job, ok := m.jobs[name]
	require.True(t, ok, "no Job %s", name)
	require.Len(t, job.Spec.Template.Spec.Containers, 1, "Job %s", name)
	return job, &job.Spec.Template.Spec.Containers[0]
}

// parseArgs splits a container's args into the command and a map from flag to
// value. Every flag must be written --name=value.
func parseArgs(t *testing.T, c *corev1.Container) (string, map[string]string) {
	t.Helper()
	require.NotEmpty(t, c.Args, "container %s has no args", c.Name)
	flags := map[string]string{}
	for _, arg := range c.Args[1:] {
		name, value, ok := strings.Cut(arg, "=")
		require.True(t, ok && strings.HasPrefix(name, "--"), "container %s: write the argument %q as --flag=value", c.Name, arg)
		flags[name] = value
	}
	return c.Args[0], flags
}

// portOf returns the port number of a HOST:PORT flag value.
func portOf(t *testing.T, flag, value string) int32 {
	t.Helper()
	_, port, err := net.SplitHostPort(value)
	require.NoError(t, err, "%s=%s", flag, value)
	n, err := strconv.ParseInt(port, 10, 32)
	require.NoError(t, err, "%s=%s has no numeric port", flag, value)
	return int32(n)
}

// containerPort returns the container port called name.
func containerPort(t *testing.T, c *corev1.Container, name string) corev1.ContainerPort {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("container %s has no port %s", c.Name, name)
	return corev1.ContainerPort{}
}

// envVar returns the env entry called name and whether it exists.
func envVar(c *corev1.Container, name string) (corev1.EnvVar, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e, true
		}
	}
	return corev1.EnvVar{}, false
}

// envValue returns the literal value of the env entry called name.
func envValue(t *testing.T, c *corev1.Container, name string) string {
	t.Helper()
	e, ok := envVar(c, name)
	require.True(t, ok, "container %s has no env %s", c.Name, name)
	require.Nil(t, e.ValueFrom, "container %s: env %s should be a literal value", c.Name, name)
	return e.Value
}

// checkServicePorts checks that every port of svc targets a container port of
// the same number and protocol, and that every container port is exposed.
func checkServicePorts(t *testing.T, svc *corev1.Service, c *corev1.Container) {
	t.Helper()
	exposed := map[string]bool{}
	for _, sp := range svc.Spec.Ports {
		require.NotEmpty(t, sp.TargetPort.StrVal, "Service %s port %s: target the container port by name", svc.Name, sp.Name)
		cp := containerPort(t, c, sp.TargetPort.StrVal)
		assert.Equal(t, cp.ContainerPort, sp.Port, "Service %s port %s", svc.Name, sp.Name)
		assert.Equal(t, cp.Protocol, sp.Protocol, "Service %s port %s", svc.Name, sp.Name)
		exposed[cp.Name] = true
	}
	for _, cp := range c.Ports {
		assert.True(t, exposed[cp.Name], "Service %s does not expose port %s of container %s", svc.Name, cp.Name, c.Name)
	}
}

// checkSelector checks that svc selects the pods of job.
func checkSelector(t *testing.T, svc *corev1.Service, job *batchv1.Job) {
	t.Helper()
	require.NotEmpty(t, svc.Spec.Selector, "Service %s has no selector", svc.Name)
	for key, value := range svc.Spec.Selector {
		assert.Equal(t, value, job.Spec.Template.Labels[key], "Service %s selects %s=%s, which the pods of Job %s lack", svc.Name, key, value, job.Name)
	}
}

// checkGRPCProbes checks that the startup, readiness and liveness probes call
// the gRPC health service on port.
func checkGRPCProbes(t *testing.T, c *corev1.Container, port int32) {
	t.Helper()
	probes := map[string]*corev1.Probe{"startup": c.StartupProbe, "readiness": c.ReadinessProbe, "liveness": c.LivenessProbe}
	for kind, probe := range probes {
		require.NotNil(t, probe, "container %s has no %s probe", c.Name, kind)
		require.NotNil(t, probe.GRPC, "container %s: the %s probe should be a gRPC health probe", c.Name, kind)
		assert.Equal(t, port, probe.GRPC.Port, "container %s: %s probe port", c.Name, kind)
		require.NotNil(t, probe.GRPC.Service, "container %s: %s probe service", c.Name, kind)
		assert.Equal(t, "", *probe.GRPC.Service, "container %s: the %s probe should ask for the server's overall health", c.Name, kind)
	}
}

// checkArgsAgainstBinary checks that every flag in args is one that the
// command's help lists and that every $(NAME) in args is an env entry defined
// in the container, since Kubernetes leaves an undefined reference as it is.
func checkArgsAgainstBinary(t *testing.T, c *corev1.Container, command string) {
	t.Helper()
	known := helpFlags(t, command)
	got, flags := parseArgs(t, c)
	require.Equal(t, command, got, "container %s runs the wrong command", c.Name)
	for flag := range flags {
		assert.True(t, known[flag], "container %s: `ringtune %s --help` lists no flag %s", c.Name, command, flag)
	}
	reference := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	for _, arg := range c.Args {
		for _, m := range reference.FindAllStringSubmatch(arg, -1) {
			_, ok := envVar(c, m[1])
			assert.True(t, ok, "container %s: argument %q refers to $(%s), which is not in env", c.Name, arg, m[1])
		}
	}
}

// checkEnvNames checks that the container sets only variables the binary
// reads or args expand, and that the binary's help names those it reads.
func checkEnvNames(t *testing.T, c *corev1.Container) {
	t.Helper()
	allowed := map[string]bool{}
	for _, name := range append(append([]string{}, binaryEnv...), expansionEnv...) {
		allowed[name] = true
	}
	args := strings.Join(c.Args, " ")
	for _, e := range c.Env {
		assert.True(t, allowed[e.Name], "container %s sets env %s, which ringtune does not read", c.Name, e.Name)
		if contains(expansionEnv, e.Name) {
			assert.Contains(t, args, "$("+e.Name+")", "container %s sets env %s for expansion, but no argument uses it", c.Name, e.Name)
		}
		// The node's help documents every variable of binaryEnv, and the
		// coordinator reads the same ones (WORLD_SIZE, the token) through the
		// code that both commands share.
		if contains(binaryEnv, e.Name) {
			assert.True(t, strings.Contains(commandHelp["node"], e.Name), "`ringtune node --help` does not mention env %s", e.Name)
		}
	}
}

func contains(list []string, s string) bool {
	for _, item := range list {
		if item == s {
			return true
		}
	}
	return false
}

// checkSecurity checks that the pod and its container run as the non-root
// user of the image, without privileges, on a read-only root file system with
// a writable /tmp.
func checkSecurity(t *testing.T, job *batchv1.Job, c *corev1.Container) {
	t.Helper()
	pod := job.Spec.Template.Spec.SecurityContext
	require.NotNil(t, pod, "Job %s has no pod securityContext", job.Name)
	require.NotNil(t, pod.RunAsNonRoot, "Job %s: runAsNonRoot", job.Name)
	assert.True(t, *pod.RunAsNonRoot, "Job %s: runAsNonRoot", job.Name)
	require.NotNil(t, pod.RunAsUser, "Job %s: runAsUser", job.Name)
	assert.Equal(t, int64(nonRootUID), *pod.RunAsUser, "Job %s: runAsUser", job.Name)

	sc := c.SecurityContext
	require.NotNil(t, sc, "container %s has no securityContext", c.Name)
	require.NotNil(t, sc.AllowPrivilegeEscalation, "container %s: allowPrivilegeEscalation", c.Name)
	assert.False(t, *sc.AllowPrivilegeEscalation, "container %s: allowPrivilegeEscalation", c.Name)
	require.NotNil(t, sc.ReadOnlyRootFilesystem, "container %s: readOnlyRootFilesystem", c.Name)
	assert.True(t, *sc.ReadOnlyRootFilesystem, "container %s: readOnlyRootFilesystem", c.Name)
	require.NotNil(t, sc.Capabilities, "container %s: capabilities", c.Name)
	assert.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop, "container %s: capabilities.drop", c.Name)
	assert.Empty(t, sc.Capabilities.Add, "container %s: capabilities.add", c.Name)
	assert.Nil(t, sc.Privileged, "container %s: privileged", c.Name)

	require.NotNil(t, job.Spec.Template.Spec.EnableServiceLinks, "Job %s: enableServiceLinks", job.Name)
	assert.False(t, *job.Spec.Template.Spec.EnableServiceLinks, "Job %s: service links would add MASTER_PORT-like variables", job.Name)
	tmp := volumeOf(t, job, c, "/tmp")
	assert.NotNil(t, tmp.EmptyDir, "Job %s: /tmp should be an emptyDir", job.Name)
}

// volumeOf returns the volume mounted at path in the container.
func volumeOf(t *testing.T, job *batchv1.Job, c *corev1.Container, path string) corev1.Volume {
	t.Helper()
	for _, mount := range c.VolumeMounts {
		if mount.MountPath != path {
			continue
		}
		for _, v := range job.Spec.Template.Spec.Volumes {
			if v.Name == mount.Name {
				return v
			}
		}
		t.Fatalf("Job %s mounts volume %s, which the pod does not define", job.Name, mount.Name)
	}
	t.Fatalf("container %s mounts nothing at %s", c.Name, path)
	return corev1.Volume{}
}

// mountOf returns the container's mount at path.
func mountOf(t *testing.T, c *corev1.Container, path string) corev1.VolumeMount {
	t.Helper()
	for _, mount := range c.VolumeMounts {
		if mount.MountPath == path {
			return mount
		}
	}
	t.Fatalf("container %s mounts nothing at %s", c.Name, path)
	return corev1.VolumeMount{}
}

// checkTokenEnv checks that RINGTUNE_JOB_TOKEN comes from a key of the Secret.
func checkTokenEnv(t *testing.T, m *manifests, c *corev1.Container) {
	t.Helper()
	e, ok := envVar(c, tokenEnv)
	require.True(t, ok, "container %s has no env %s", c.Name, tokenEnv)
	require.NotNil(t, e.ValueFrom, "container %s: %s must come from the Secret", c.Name, tokenEnv)
	ref := e.ValueFrom.SecretKeyRef
	require.NotNil(t, ref, "container %s: %s must come from the Secret", c.Name, tokenEnv)
	secret, ok := m.secrets[ref.Name]
	require.True(t, ok, "container %s: no Secret %s", c.Name, ref.Name)
	assert.NotEmpty(t, secret.Data[ref.Key], "Secret %s has no key %s", ref.Name, ref.Key)
}

// parseJobConfig returns the job config of the ConfigMap that the container
// mounts at the directory of its --config, parsed and validated as ringtune
// does. The files that it names need not exist.
func parseJobConfig(t *testing.T, m *manifests, job *batchv1.Job, c *corev1.Container) *jobconfig.Config {
	t.Helper()
	_, flags := parseArgs(t, c)
	path := flags["--config"]
	require.NotEmpty(t, path, "container %s has no --config", c.Name)
	v := volumeOf(t, job, c, filepath.Dir(path))
	require.NotNil(t, v.ConfigMap, "Job %s: %s should be a ConfigMap volume", job.Name, filepath.Dir(path))
	cm, ok := m.configMaps[v.ConfigMap.Name]
	require.True(t, ok, "Job %s mounts ConfigMap %s, which is not rendered", job.Name, v.ConfigMap.Name)
	content, ok := cm.Data[filepath.Base(path)]
	require.True(t, ok, "ConfigMap %s has no key %s", cm.Name, filepath.Base(path))

	cfg, err := jobconfig.Parse([]byte(content), path)
	require.NoError(t, err, "ConfigMap %s", cm.Name)
	require.NoError(t, cfg.Validate(), "ConfigMap %s", cm.Name)
	return cfg
}

// checkKustomization checks the invariants between the resources of one
// rendered kustomization and the binary, and returns the rendered objects.
func checkKustomization(t *testing.T, dir string, nodes int) *manifests {
	m := render(t, dir)

	coordJob, coord := m.job(t, coordinatorName)
	nodeJob, node := m.job(t, nodeJobName)
	coordSvc, ok := m.services[coordinatorName]
	require.True(t, ok, "no Service %s", coordinatorName)
	nodeSvc, ok := m.services[nodeServiceName]
	require.True(t, ok, "no Service %s", nodeServiceName)

	t.Run("args", func(t *testing.T) {
		checkArgsAgainstBinary(t, coord, "coordinator")
		checkArgsAgainstBinary(t, node, "node")
		checkEnvNames(t, coord)
		checkEnvNames(t, node)
	})

	t.Run("coordinator ports", func(t *testing.T) {
		_, flags := parseArgs(t, coord)
		assert.Equal(t, containerPort(t, coord, "grpc").ContainerPort, portOf(t, "--listen", flags["--listen"]))
		assert.Equal(t, containerPort(t, coord, "metrics").ContainerPort, portOf(t, "--metrics-addr", flags["--metrics-addr"]))
		gossip := portOf(t, "--gossip-addr", flags["--gossip-addr"])
		assert.Equal(t, gossip, containerPort(t, coord, "gossip-tcp").ContainerPort)
		assert.Equal(t, gossip, containerPort(t, coord, "gossip-udp").ContainerPort)
		assert.Equal(t, corev1.ProtocolUDP, containerPort(t, coord, "gossip-udp").Protocol)
		checkServicePorts(t, coordSvc, coord)
		checkSelector(t, coordSvc, coordJob)
		checkGRPCProbes(t, coord, portOf(t, "--listen", flags["--listen"]))
	})

	t.Run("node ports", func(t *testing.T) {
		_, flags := parseArgs(t, node)
		listen := portOf(t, "--listen", flags["--listen"])
		assert.Equal(t, containerPort(t, node, "collective").ContainerPort, listen)
		assert.Equal(t, listen, portOf(t, "--advertise", flags["--advertise"]), "--advertise should name the --listen port")
		assert.Equal(t, containerPort(t, node, "metrics").ContainerPort, portOf(t, "--metrics-addr", flags["--metrics-addr"]))
		health := portOf(t, "--health-addr", flags["--health-addr"])
		assert.Equal(t, containerPort(t, node, "health").ContainerPort, health)
		gossip := portOf(t, "--gossip-addr", flags["--gossip-addr"])
		assert.Equal(t, gossip, containerPort(t, node, "gossip-tcp").ContainerPort)
		assert.Equal(t, gossip, containerPort(t, node, "gossip-udp").ContainerPort)
		checkServicePorts(t, nodeSvc, node)
		checkSelector(t, nodeSvc, nodeJob)
		checkGRPCProbes(t, node, health)
	})

	t.Run("node addressing", func(t *testing.T) {
		_, flags := parseArgs(t, node)
		assert.Equal(t, corev1.ClusterIPNone, nodeSvc.Spec.ClusterIP, "Service %s must be headless", nodeSvc.Name)
		assert.True(t, nodeSvc.Spec.PublishNotReadyAddresses, "Service %s must publish pods before they are ready", nodeSvc.Name)
		assert.Equal(t, nodeSvc.Name, nodeJob.Spec.Template.Spec.Subdomain)
		assert.Equal(t, nodeSvc.Name, envValue(t, node, "NODE_SERVICE"))
		// The pod's hostname is <job>-<index>, and the index is RANK.
		assert.Equal(t, "$(JOB_NAME)-$(RANK).$(NODE_SERVICE):29500", flags["--advertise"])
		jobName, ok := envVar(node, "JOB_NAME")
		require.True(t, ok)
		require.NotNil(t, jobName.ValueFrom)
		require.NotNil(t, jobName.ValueFrom.FieldRef)
		assert.Equal(t, "metadata.labels['batch.kubernetes.io/job-name']", jobName.ValueFrom.FieldRef.FieldPath)

		rank, ok := envVar(node, "RANK")
		require.True(t, ok, "the node has no RANK")
		require.NotNil(t, rank.ValueFrom)
		require.NotNil(t, rank.ValueFrom.FieldRef)
		assert.Equal(t, completionIndex, rank.ValueFrom.FieldRef.FieldPath)

		assert.Equal(t, coordSvc.Name, envValue(t, node, "MASTER_ADDR"))
		port, err := strconv.Atoi(envValue(t, node, "MASTER_PORT"))
		require.NoError(t, err)
		assert.Equal(t, int32(port), coordSvc.Spec.Ports[0].Port, "MASTER_PORT should be the coordinator's grpc port")
		assert.Equal(t, "grpc", coordSvc.Spec.Ports[0].Name)
	})

	t.Run("world size", func(t *testing.T) {
		spec := nodeJob.Spec
		require.NotNil(t, spec.CompletionMode)
		assert.Equal(t, batchv1.IndexedCompletion, *spec.CompletionMode)
		require.NotNil(t, spec.Completions)
		require.NotNil(t, spec.Parallelism)
		assert.Equal(t, int32(nodes), *spec.Completions, "completions")
		assert.Equal(t, int32(nodes), *spec.Parallelism, "parallelism")
		assert.Equal(t, strconv.Itoa(nodes), envValue(t, node, "WORLD_SIZE"), "WORLD_SIZE of the nodes")
		assert.Equal(t, strconv.Itoa(nodes), envValue(t, coord, "WORLD_SIZE"), "WORLD_SIZE of the coordinator")
		assert.Equal(t, nodes, parseJobConfig(t, m, nodeJob, node).Cluster.Nodes, "cluster.nodes of the nodes' config")
		assert.Equal(t, nodes, parseJobConfig(t, m, coordJob, coord).Cluster.Nodes, "cluster.nodes of the coordinator's config")
	})

	t.Run("job config", func(t *testing.T) {
		cfg := parseJobConfig(t, m, nodeJob, node)
		assert.Equal(t, "lora", cfg.Mode)
		for _, path := range []string{cfg.Model.Base, cfg.Data.Train, cfg.Output} {
			assert.True(t, strings.HasPrefix(path, "/data/"), "%s is not on the /data volume", path)
		}
		// The coordinator and the nodes must read the same config, because the
		// coordinator rejects a node whose resolved config differs.
		coordCfg := parseJobConfig(t, m, coordJob, coord)
		assert.Equal(t, cfg.Hash(), coordCfg.Hash())
	})

	t.Run("restarts and shutdown", func(t *testing.T) {
		spec := nodeJob.Spec
		require.NotNil(t, spec.BackoffLimitPerIndex, "a failed node pod should be replaced")
		assert.GreaterOrEqual(t, *spec.BackoffLimitPerIndex, int32(1))
		cfg := parseJobConfig(t, m, nodeJob, node)
		assert.GreaterOrEqual(t, int(*spec.BackoffLimitPerIndex), cfg.Cluster.MaxRestarts,
			"each ring re-formation needs a replacement pod of the lost index")
		assert.Positive(t, cfg.Cluster.MaxRestarts, "a lost node pod should not fail the job")
		assert.Equal(t, corev1.RestartPolicyNever, spec.Template.Spec.RestartPolicy, "backoffLimitPerIndex replaces pods")
		assert.Equal(t, corev1.RestartPolicyNever, coordJob.Spec.Template.Spec.RestartPolicy)
		for _, job := range []*batchv1.Job{nodeJob, coordJob} {
			grace := job.Spec.Template.Spec.TerminationGracePeriodSeconds
			require.NotNil(t, grace, "Job %s: terminationGracePeriodSeconds", job.Name)
			assert.GreaterOrEqual(t, *grace, int64(120), "Job %s: rank 0 needs time to finish a checkpoint", job.Name)
		}
	})

	t.Run("security", func(t *testing.T) {
		checkSecurity(t, coordJob, coord)
		checkSecurity(t, nodeJob, node)
		checkTokenEnv(t, m, coord)
		checkTokenEnv(t, m, node)
	})

	t.Run("volumes and resources", func(t *testing.T) {
		for _, pair := range []struct {
			job *batchv1.Job
			c   *corev1.Container
		}{{coordJob, coord}, {nodeJob, node}} {
			v := volumeOf(t, pair.job, pair.c, "/data")
			require.NotNil(t, v.PersistentVolumeClaim, "Job %s: /data should be the shared claim", pair.job.Name)
			claim, ok := m.claims[v.PersistentVolumeClaim.ClaimName]
			require.True(t, ok, "Job %s mounts claim %s, which is not rendered", pair.job.Name, v.PersistentVolumeClaim.ClaimName)
			assert.Equal(t, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}, claim.Spec.AccessModes)
			assert.False(t, pair.c.Resources.Requests.Cpu().IsZero(), "container %s: cpu request", pair.c.Name)
			assert.False(t, pair.c.Resources.Requests.Memory().IsZero(), "container %s: memory request", pair.c.Name)
		}
		assert.False(t, mountOf(t, node, "/data").ReadOnly, "rank 0 writes the output to /data")
		gpu := node.Resources.Limits[corev1.ResourceName("nvidia.com/gpu")]
		assert.Equal(t, int64(1), gpu.Value(), "nodes should each take one GPU")
	})
	return m
}

func TestBaseManifests(t *testing.T) {
	checkKustomization(t, "base", 2)
}

func TestLoRA4NodeOverlay(t *testing.T) {
	m := checkKustomization(t, filepath.Join("overlays", "lora-4node"), 4)

	_, node := m.job(t, nodeJobName)
	_, coord := m.job(t, coordinatorName)
	assert.Equal(t, "registry.example.com/ringtune:v0.1.0", node.Image)
	assert.Equal(t, node.Image, coord.Image)
	_, ok := m.secrets[tokenSecretName]
	assert.True(t, ok, "no Secret %s", tokenSecretName)
	_, ok = m.configMaps[configMapName]
	assert.True(t, ok, "no ConfigMap %s", configMapName)
}
