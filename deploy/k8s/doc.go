// Package k8s holds no code: its tests render the kustomize base in base/ and
// the overlays in overlays/ and check them against the Kubernetes API types
// and the flags and environment variables that the ringtune binary reads.
package k8s
