package membership

import (
	"context"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testProbeInterval makes the failure detector declare a member dead within about
// a second on loopback.
const testProbeInterval = 200 * time.Millisecond

// recorder collects the names passed to OnLeave and OnDead.
type recorder struct {
	mu   sync.Mutex
	left []string
	dead []string
}

func (r *recorder) onLeave(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.left = append(r.left, name)
}

func (r *recorder) onDead(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dead = append(r.dead, name)
}

func (r *recorder) snapshot() (left, dead []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.left), slices.Clone(r.dead)
}

func startMember(t *testing.T, name, token string, rec *recorder) *Membership {
	t.Helper()
	cfg := Config{
		Name:          name,
		BindAddr:      "127.0.0.1:0",
		Token:         token,
		Logger:        testLogger(t),
		ProbeInterval: testProbeInterval,
	}
	if rec != nil {
		cfg.OnLeave = rec.onLeave
		cfg.OnDead = rec.onDead
	}
	m, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, m.Shutdown()) })
	return m
}

func joinMember(t *testing.T, m *Membership, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, m.Join(ctx, []string{addr}))
}

func sortedMembers(m *Membership) []string {
	names := m.Members()
	slices.Sort(names)
	return names
}

func TestMembersSeeEachOther(t *testing.T) {
	a := startMember(t, "a", "token", nil)
	b := startMember(t, "b", "token", nil)
	c := startMember(t, "c", "token", nil)

	joinMember(t, b, a.Addr())
	joinMember(t, c, b.Addr())

	want := []string{"a", "b", "c"}
	for _, m := range []*Membership{a, b, c} {
		assert.EventuallyWithT(t, func(collect *assert.CollectT) {
			assert.Equal(collect, want, sortedMembers(m))
		}, 5*time.Second, 20*time.Millisecond, "members seen by %s", m.cfg.Name)
	}
}

func TestAddrReportsBoundPort(t *testing.T) {
	m := startMember(t, "a", "token", nil)

	assert.NotContains(t, m.Addr(), ":0")
	assert.Contains(t, m.Addr(), "127.0.0.1:")
}

func TestWrongTokenCannotJoin(t *testing.T) {
	a := startMember(t, "a", "token", nil)
	b := startMember(t, "b", "token", nil)
	joinMember(t, b, a.Addr())
	intruder := startMember(t, "intruder", "other-token", nil)

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := intruder.Join(ctx, []string{a.Addr()})

	require.Error(t, err)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, []string{"intruder"}, intruder.Members())
	// Give gossip time to spread a member that had slipped in.
	time.Sleep(5 * testProbeInterval)
	assert.Equal(t, []string{"a", "b"}, sortedMembers(a))
	assert.Equal(t, []string{"a", "b"}, sortedMembers(b))
}

func TestShutdownWithoutLeaveReportsDead(t *testing.T) {
	rec := &recorder{}
	a := startMember(t, "a", "token", rec)
	b := startMember(t, "b", "token", nil)
	joinMember(t, b, a.Addr())
	require.Eventually(t, func() bool { return len(a.Members()) == 2 }, 5*time.Second, 20*time.Millisecond)

	start := time.Now()
	require.NoError(t, b.Shutdown())

	require.EventuallyWithT(t, func(collect *assert.CollectT) {
		_, dead := rec.snapshot()
		assert.Equal(collect, []string{"b"}, dead)
	}, 5*time.Second, 20*time.Millisecond)
	t.Logf("member declared dead after %v", time.Since(start))
	left, _ := rec.snapshot()
	assert.Empty(t, left)
	assert.Equal(t, []string{"a"}, a.Members())
}

func TestLeaveReportsLeave(t *testing.T) {
	rec := &recorder{}
	a := startMember(t, "a", "token", rec)
	b := startMember(t, "b", "token", nil)
	joinMember(t, b, a.Addr())
	require.Eventually(t, func() bool { return len(a.Members()) == 2 }, 5*time.Second, 20*time.Millisecond)

	require.NoError(t, b.Leave(2*time.Second))
	require.NoError(t, b.Shutdown())

	require.EventuallyWithT(t, func(collect *assert.CollectT) {
		left, _ := rec.snapshot()
		assert.Equal(collect, []string{"b"}, left)
	}, 5*time.Second, 20*time.Millisecond)
	// A member that left must not be reported dead later as well.
	time.Sleep(10 * testProbeInterval)
	_, dead := rec.snapshot()
	assert.Empty(t, dead)
}

func TestJoinGivesUpWhenContextEnds(t *testing.T) {
	a := startMember(t, "a", "token", nil)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	// Port 1 on loopback has no listener, so every attempt fails at once.
	err := a.Join(ctx, []string{"127.0.0.1:1"})

	require.Error(t, err)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "127.0.0.1:1")
	assert.Less(t, time.Since(start), 2*time.Second)
}

func TestLeaveAfterShutdownFails(t *testing.T) {
	a := startMember(t, "a", "token", nil)
	require.NoError(t, a.Shutdown())

	err := a.Leave(time.Second)

	require.Error(t, err)
	assert.Contains(t, err.Error(), "already shut down")
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"missing name", Config{BindAddr: "127.0.0.1:0", Token: "t"}, "Name is missing"},
		{"missing token", Config{Name: "a", BindAddr: "127.0.0.1:0"}, "Token is missing"},
		{"no port", Config{Name: "a", BindAddr: "127.0.0.1", Token: "t"}, "expected host:port"},
		{"bad port", Config{Name: "a", BindAddr: "127.0.0.1:x", Token: "t"}, "invalid port"},
		{"negative probe interval", Config{Name: "a", BindAddr: "127.0.0.1:0", Token: "t", ProbeInterval: -1}, "ProbeInterval is -1ns"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)

			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantErr)
		})
	}
}

func TestDeriveKey(t *testing.T) {
	key1, err := DeriveKey("token")
	require.NoError(t, err)
	key2, err := DeriveKey("token")
	require.NoError(t, err)
	other, err := DeriveKey("other")
	require.NoError(t, err)

	assert.Len(t, key1, 32)
	assert.Equal(t, key1, key2)
	assert.NotEqual(t, key1, other)
}

func TestParseLogLine(t *testing.T) {
	tests := []struct {
		line      string
		wantLevel slog.Level
		wantMsg   string
	}{
		{"[DEBUG] memberlist: Stream connection from=127.0.0.1:1", slog.LevelDebug, "Stream connection from=127.0.0.1:1"},
		{"[WARN] memberlist: Got ping for unexpected node", slog.LevelWarn, "Got ping for unexpected node"},
		{"[ERR] memberlist: Failed to decrypt", slog.LevelError, "Failed to decrypt"},
		{"[INFO] memberlist: Marking b as failed", slog.LevelInfo, "Marking b as failed"},
		{"[ERR] memberlist: Failed to send ack: write udp 127.0.0.1:1->127.0.0.1:2: use of closed network connection from=127.0.0.1:2", slog.LevelDebug,
			"Failed to send ack: write udp 127.0.0.1:1->127.0.0.1:2: use of closed network connection from=127.0.0.1:2"},
		{"[ERR] memberlist: Failed fallback TCP ping: timeout 1s: read tcp: i/o timeout", slog.LevelWarn, "Failed fallback TCP ping: timeout 1s: read tcp: i/o timeout"},
		{"untagged", slog.LevelInfo, "untagged"},
	}
	for _, tt := range tests {
		level, message := parseLogLine(tt.line)

		assert.Equal(t, tt.wantLevel, level, tt.line)
		assert.Equal(t, tt.wantMsg, message, tt.line)
	}
}

// testLogger writes to the test's output, which go test shows for failed tests and
// with -v. memberlist goroutines may still log after Shutdown returns, so the writer
// drops lines once the test's cleanup has run.
func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{out: t.Output()}
	t.Cleanup(w.stop)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	mu      sync.Mutex
	out     io.Writer
	stopped bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return len(p), nil
	}
	return w.out.Write(p)
}

func (w *testWriter) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
}

func TestWildcardBindAdvertisesRealAddress(t *testing.T) {
	for _, bind := range []string{":0", "0.0.0.0:0", "[::]:0"} {
		t.Run(bind, func(t *testing.T) {
			m, err := New(Config{Name: "a", BindAddr: bind, Token: "token", Logger: testLogger(t)})
			if err != nil {
				// Hosts without a private IPv4 address need AdvertiseAddr.
				require.ErrorContains(t, err, "advertise address")
				return
			}
			t.Cleanup(func() { assert.NoError(t, m.Shutdown()) })
			host, _, err := net.SplitHostPort(m.Addr())
			require.NoError(t, err)
			assert.False(t, net.ParseIP(host).IsUnspecified(), "member advertises %s, which others read as themselves", m.Addr())
		})
	}
}

func TestAdvertiseAddr(t *testing.T) {
	m, err := New(Config{Name: "a", BindAddr: "0.0.0.0:0", AdvertiseAddr: "127.0.0.2", Token: "token", Logger: testLogger(t)})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, m.Shutdown()) })
	assert.Contains(t, m.Addr(), "127.0.0.2:")

	_, err = New(Config{Name: "b", BindAddr: "127.0.0.1:0", AdvertiseAddr: "node-1", Token: "token", Logger: testLogger(t)})
	require.ErrorContains(t, err, "must be an IP address")
}
