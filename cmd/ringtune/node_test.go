package main

import (
	"testing"

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
