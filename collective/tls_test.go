package collective

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// writeTestPKI writes a CA and one loopback certificate signed by it into dir, and
// returns the paths of the CA certificate, the certificate and its key.
func writeTestPKI(t *testing.T, dir, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	require.NoError(t, err)
	certFile = filepath.Join(dir, name+".pem")
	keyFile = filepath.Join(dir, name+"-key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600))
	return certFile, keyFile
}

func newTestCA(t *testing.T, dir, name string) (*x509.Certificate, *ecdsa.PrivateKey, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	path := filepath.Join(dir, name+".pem")
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	return ca, key, path
}

func TestMutualTLSRing(t *testing.T) {
	dir := t.TempDir()
	ca, caKey, caFile := newTestCA(t, dir, "ca")
	eps, addrs := grpcEndpoints(t, 2, func(i int, c *GRPCConfig) {
		c.CertFile, c.KeyFile = writeTestPKI(t, dir, "rank"+string(rune('0'+i)), ca, caKey)
		c.CAFile = caFile
	})
	comms, errs := grpcRing(t, eps, addrs, 1, nil)
	for _, err := range errs {
		require.NoError(t, err)
	}
	bufs := [][]float32{{1, 2}, {3, 4}}
	errs = onEveryRank(comms, func(c *Communicator) error {
		return c.AllReduce(t.Context(), bufs[c.Rank()], Sum)
	})
	for _, err := range errs {
		require.NoError(t, err)
	}
	assert.Equal(t, []float32{4, 6}, bufs[0])
}

func TestMutualTLSRejectsForeignCertificate(t *testing.T) {
	dir := t.TempDir()
	ca, caKey, caFile := newTestCA(t, dir, "ca")
	other, otherKey, _ := newTestCA(t, dir, "other-ca")
	eps, addrs := grpcEndpoints(t, 2, func(i int, c *GRPCConfig) {
		if i == 0 {
			// Rank 0's certificate comes from a CA that rank 1 does not trust.
			c.CertFile, c.KeyFile = writeTestPKI(t, dir, "rank0", other, otherKey)
		} else {
			c.CertFile, c.KeyFile = writeTestPKI(t, dir, "rank1", ca, caKey)
		}
		c.CAFile = caFile
	})
	_, errs := grpcRing(t, eps, addrs, 1, func(c *Config) { c.ConnectTimeout = 2 * time.Second })
	require.Error(t, errs[0], "rank 0 must not reach rank 1 with an untrusted certificate")
}

func TestGRPCConfigErrors(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer lis.Close()
	_, err = NewGRPCEndpoint(lis, GRPCConfig{})
	assert.ErrorContains(t, err, "job token")
	_, err = NewGRPCEndpoint(lis, GRPCConfig{Token: "t", CertFile: "a.pem"})
	assert.ErrorContains(t, err, "both a certificate and a key")
	_, err = NewGRPCEndpoint(lis, GRPCConfig{Token: "t", CertFile: "/nonexistent.pem", KeyFile: "/nonexistent-key.pem"})
	assert.ErrorContains(t, err, "/nonexistent.pem")
}
