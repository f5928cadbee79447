// Package membership runs a gossip membership cluster (SWIM, through
// github.com/hashicorp/memberlist) between the coordinator and the nodes of one job,
// so that the coordinator learns within seconds that a node process died.
//
// All gossip traffic is encrypted and authenticated with a key derived from the job
// token, so a process without the token can neither join the cluster nor declare a
// member dead.
package membership

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// keyInfo is the HKDF info string of the gossip key. Changing it changes the key, so
// members built with different values cannot talk to each other.
const keyInfo = "ringtune memberlist key v1"

// DefaultProbeInterval is the failure-detector period used when Config.ProbeInterval
// is zero.
const DefaultProbeInterval = time.Second

// Config describes one member.
type Config struct {
	// Name identifies the member in the cluster and must be unique in it. Nodes use
	// their node id, the coordinator uses "coordinator". Required.
	Name string
	// BindAddr is the host:port for gossip over both UDP and TCP. Port 0 picks a free
	// port, which Addr then returns. Required. With an empty or unspecified host
	// (":7946", "0.0.0.0:7946", "[::]:7946") the member advertises this host's private
	// IPv4 address, and New fails when there is none and AdvertiseAddr is empty.
	BindAddr string
	// AdvertiseAddr is the IP address that other members reach this one at, on
	// the bound port, such as a Kubernetes pod IP. Optional: default from BindAddr.
	AdvertiseAddr string
	// Token is the job's shared secret, from which the gossip encryption key is
	// derived. Required.
	Token string
	// Logger receives membership changes and memberlist's own log lines. Default
	// slog.Default().
	Logger *slog.Logger
	// OnLeave is called with the name of another member that left on purpose (it
	// called Leave). Optional.
	OnLeave func(name string)
	// OnDead is called with the name of another member that the failure detector
	// declared dead. Optional.
	OnDead func(name string)
	// ProbeInterval is the failure detector's period. By memberlist's timeout rules,
	// a member that stops replying to probes is declared dead after about
	// ProbeInterval + ProbeInterval/2 (probe timeout) + 3·ProbeInterval (suspicion)
	// in a cluster of up to 10 members. That is an estimate of 4.5 s for the default of 1 s.
	// Optional.
	ProbeInterval time.Duration
}

// Membership is this process's member of the job's gossip cluster. Callbacks run on
// one goroutine owned by the Membership, in the order memberlist reported the
// changes, so a slow callback delays later callbacks but never the gossip protocol.
type Membership struct {
	cfg  Config
	log  *slog.Logger
	list *memberlist.Memberlist

	// mu guards shutdown, which makes Leave after Shutdown an error instead of the
	// panic that memberlist raises.
	mu       sync.Mutex
	shutdown bool

	events     *eventQueue
	dispatched chan struct{}

	// meta is this member's node metadata, metaLeaving once Leave started.
	meta atomic.Value
}

// metaLeaving is the node metadata of a member that is leaving on purpose. memberlist
// v0.7.0 reports a leave and a death through the same NotifyLeave call and fills in
// no node state there, so Leave first gossips this metadata and the other members
// read it in NotifyLeave.
const metaLeaving = "leaving"

// DeriveKey returns the 32-byte AES-256 gossip key for a job token, derived with
// HKDF-SHA256.
func DeriveKey(token string) ([]byte, error) {
	return hkdf.Key(sha256.New, []byte(token), nil, keyInfo, 32)
}

// New starts a member bound to cfg.BindAddr. It is alone in its cluster until Join.
func New(cfg Config) (*Membership, error) {
	if cfg.Name == "" {
		return nil, errors.New("membership config: Name is missing")
	}
	if cfg.Token == "" {
		return nil, errors.New("membership config: Token is missing: the gossip key is derived from the job token")
	}
	host, portText, err := net.SplitHostPort(cfg.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("membership config: BindAddr %q is invalid, expected host:port: %w", cfg.BindAddr, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("membership config: BindAddr %q has an invalid port", cfg.BindAddr)
	}
	if cfg.ProbeInterval < 0 {
		return nil, fmt.Errorf("membership config: ProbeInterval is %v, must be positive or 0 for the default", cfg.ProbeInterval)
	}
	if cfg.ProbeInterval == 0 {
		cfg.ProbeInterval = DefaultProbeInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	key, err := DeriveKey(cfg.Token)
	if err != nil {
		return nil, fmt.Errorf("derive gossip key: %w", err)
	}

	m := &Membership{
		cfg:        cfg,
		log:        cfg.Logger.With("member", cfg.Name),
		events:     newEventQueue(),
		dispatched: make(chan struct{}),
	}
	m.meta.Store([]byte(nil))

	mlConfig := memberlist.DefaultLANConfig()
	mlConfig.Name = cfg.Name
	// memberlist looks up a private address to advertise only for "0.0.0.0".
	// For "" and "::" it would advertise the unspecified address, which every
	// other member reads as itself.
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "0.0.0.0"
	}
	mlConfig.BindAddr = host
	mlConfig.BindPort = port
	mlConfig.AdvertisePort = port
	if cfg.AdvertiseAddr != "" {
		if net.ParseIP(cfg.AdvertiseAddr) == nil {
			return nil, fmt.Errorf("membership config: AdvertiseAddr %q must be an IP address, such as the pod IP", cfg.AdvertiseAddr)
		}
		mlConfig.AdvertiseAddr = cfg.AdvertiseAddr
	}
	mlConfig.SecretKey = key
	mlConfig.GossipVerifyIncoming = true
	mlConfig.GossipVerifyOutgoing = true
	mlConfig.ProbeInterval = cfg.ProbeInterval
	mlConfig.ProbeTimeout = cfg.ProbeInterval / 2
	mlConfig.SuspicionMult = 3
	mlConfig.Events = &eventDelegate{m: m}
	mlConfig.Delegate = &metaDelegate{m: m}
	mlConfig.Logger = log.New(&logWriter{log: m.log.With("component", "memberlist")}, "", 0)

	list, err := memberlist.Create(mlConfig)
	if err != nil {
		return nil, fmt.Errorf("start gossip member %q on %s: %w (set the gossip advertise address when this host has no private IPv4 address)", cfg.Name, cfg.BindAddr, err)
	}
	m.list = list
	go m.dispatch()
	m.log.Info("gossip member started", "addr", m.Addr())
	return m, nil
}

// Addr returns the host:port that other members use to reach this one.
func (m *Membership) Addr() string {
	node := m.list.LocalNode()
	return net.JoinHostPort(node.Addr.String(), strconv.Itoa(int(node.Port)))
}

// Join contacts the members at addrs (host:port) and joins their cluster. It retries
// with exponential backoff, because a DNS record or a peer may not exist yet, and
// returns nil once one member replied, or an error when ctx ends first.
func (m *Membership) Join(ctx context.Context, addrs []string) error {
	if len(addrs) == 0 {
		return errors.New("join gossip cluster: no member address given")
	}
	const (
		firstBackoff = 100 * time.Millisecond
		maxBackoff   = 5 * time.Second
	)
	backoff := firstBackoff
	for attempt := 1; ; attempt++ {
		n, err := m.list.Join(addrs)
		if n > 0 {
			m.log.Info("joined gossip cluster", "contacted", n, "addrs", addrs)
			return nil
		}
		m.log.Debug("gossip join failed, retrying", "addrs", addrs, "attempt", attempt, "backoff", backoff, "err", err)

		timer := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("join gossip cluster via %v: gave up after %d attempts: %w (last error: %v)", addrs, attempt, ctx.Err(), err)
		case <-timer.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// Leave announces that this member leaves on purpose, so that the others report it
// through OnLeave instead of OnDead. It waits up to timeout for the announcement to
// reach another member. Call Shutdown afterwards.
func (m *Membership) Leave(timeout time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.shutdown {
		return errors.New("leave gossip cluster: member is already shut down")
	}

	// Gossip the leaving mark before the leave itself, so that a member that
	// receives the leave has the mark already.
	deadline := time.Now().Add(timeout)
	m.meta.Store([]byte(metaLeaving))
	if err := m.list.UpdateNode(timeout); err != nil {
		return fmt.Errorf("leave gossip cluster: announce leaving: %w", err)
	}
	if err := m.list.Leave(max(time.Until(deadline), time.Millisecond)); err != nil {
		return fmt.Errorf("leave gossip cluster: %w", err)
	}
	m.log.Info("left gossip cluster")
	return nil
}

// Shutdown stops gossip without announcing a leave, so the others eventually declare
// this member dead, and waits for pending callbacks to return. It is safe to call
// more than once.
func (m *Membership) Shutdown() error {
	m.mu.Lock()
	if m.shutdown {
		m.mu.Unlock()
		return nil
	}
	m.shutdown = true
	err := m.list.Shutdown()
	m.mu.Unlock()

	m.events.close()
	<-m.dispatched
	if err != nil {
		return fmt.Errorf("shut down gossip member: %w", err)
	}
	m.log.Info("gossip member stopped")
	return nil
}

// Members returns the names of the members this one considers alive, itself
// included.
func (m *Membership) Members() []string {
	nodes := m.list.Members()
	names := make([]string, 0, len(nodes))
	for _, node := range nodes {
		names = append(names, node.Name)
	}
	return names
}

// memberChange is one callback that dispatch runs.
type memberChange struct {
	name string
	dead bool
}

func (m *Membership) dispatch() {
	defer close(m.dispatched)
	for {
		change, ok := m.events.pop()
		if !ok {
			return
		}
		callback := m.cfg.OnLeave
		if change.dead {
			callback = m.cfg.OnDead
		}
		if callback != nil {
			callback(change.name)
		}
	}
}

// eventDelegate receives memberlist's notifications. memberlist calls it with its
// internal locks held, so it only queues the change for dispatch.
type eventDelegate struct {
	m *Membership
}

func (d *eventDelegate) NotifyJoin(node *memberlist.Node) {
	d.m.log.Info("gossip member joined", "name", node.Name, "addr", node.Address())
}

// NotifyLeave fires both for a member that left and for one declared dead. A member
// that gossiped the leaving mark counts as left, even when the failure detector
// declared it dead because its leave message was lost.
func (d *eventDelegate) NotifyLeave(node *memberlist.Node) {
	if node.Name == d.m.cfg.Name {
		return
	}
	dead := string(node.Meta) != metaLeaving
	if dead {
		d.m.log.Warn("gossip member declared dead", "name", node.Name, "addr", node.Address())
	} else {
		d.m.log.Info("gossip member left", "name", node.Name, "addr", node.Address())
	}
	d.m.events.push(memberChange{name: node.Name, dead: dead})
}

func (d *eventDelegate) NotifyUpdate(*memberlist.Node) {}

// metaDelegate publishes the member's node metadata. The other methods of
// memberlist.Delegate carry application messages, which this package does not use.
type metaDelegate struct {
	m *Membership
}

func (d *metaDelegate) NodeMeta(limit int) []byte {
	meta := d.m.meta.Load().([]byte)
	if len(meta) > limit {
		return nil
	}
	return meta
}

func (d *metaDelegate) NotifyMsg([]byte)                           {}
func (d *metaDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *metaDelegate) LocalState(join bool) []byte                { return nil }
func (d *metaDelegate) MergeRemoteState(buf []byte, join bool)     {}

// eventQueue is an unbounded FIFO of member changes, so that memberlist never blocks
// on a slow callback.
type eventQueue struct {
	mu     sync.Mutex
	items  []memberChange
	closed bool
	ready  chan struct{}
}

func newEventQueue() *eventQueue {
	return &eventQueue{ready: make(chan struct{}, 1)}
}

func (q *eventQueue) push(change memberChange) {
	q.mu.Lock()
	if !q.closed {
		q.items = append(q.items, change)
	}
	q.mu.Unlock()
	q.signal()
}

func (q *eventQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.signal()
}

func (q *eventQueue) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// pop returns the oldest change, waiting for one, or false once the queue is closed.
// Changes still queued at close are dropped.
func (q *eventQueue) pop() (memberChange, bool) {
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return memberChange{}, false
		}
		if len(q.items) > 0 {
			change := q.items[0]
			q.items = q.items[1:]
			q.mu.Unlock()
			return change, true
		}
		q.mu.Unlock()
		<-q.ready
	}
}
