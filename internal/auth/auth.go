package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
)

// Options configures an Authenticator.
type Options struct {
	// Devices and Tokens are the paths of the devices and tokens files; ""
	// means none of that kind (Device and API then return ErrNotConfigured).
	Devices string
	Tokens  string
	// Logger gets Watch's reloads; nil: slog.Default().
	Logger *slog.Logger
}

// Authenticator verifies tokens against the devices and tokens files. It is
// safe for concurrent use.
type Authenticator struct {
	opts  Options
	state atomic.Pointer[state]
	// reloadMu serializes Reload.
	reloadMu sync.Mutex
	// mu guards verified.
	mu sync.RWMutex
	// verified maps a key id to the token verified for it: at most one entry
	// per key of the files, whatever clients send.
	verified map[string]verifiedToken
	// hashing bounds concurrent argon2id runs, each of which takes the
	// parameters' memory (19 MiB by default).
	hashing chan struct{}
	// hashes counts argon2id runs (tests).
	hashes atomic.Int64
}

type verifiedToken struct {
	sum  [sha256.Size]byte // of the whole token
	hash string            // the entry's hash string when verified
}

// state is one reading of the files. It is never modified once published.
type state struct {
	devices, tokens map[string]*entry // by key id; nil when not configured
	deviceDummy     phc               // stands in for an unknown device key
	tokenDummy      phc
	devicesFile     os.FileInfo // as read, for Watch
	tokensFile      os.FileInfo
}

type entry struct {
	device  Device // KindDevice
	token   Token  // KindAPI
	hash    string
	phc     phc
	revoked bool
}

// New reads the files named in opts. A file that is missing, has a mode
// others could read or write, or does not parse is an error.
func New(opts Options) (*Authenticator, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	a := &Authenticator{
		opts:     opts,
		verified: map[string]verifiedToken{},
		hashing:  make(chan struct{}, max(1, runtime.GOMAXPROCS(0))),
	}
	st, err := a.load()
	if err != nil {
		return nil, err
	}
	a.state.Store(st)
	return a, nil
}

// HasDevices reports whether a devices file is configured.
func (a *Authenticator) HasDevices() bool { return a.opts.Devices != "" }

// HasTokens reports whether a tokens file is configured.
func (a *Authenticator) HasTokens() bool { return a.opts.Tokens != "" }

// Reload re-reads both files. On an error the previous credentials stay in
// force. Cached verifications of entries that were revoked, removed or
// changed are dropped; the others are kept.
func (a *Authenticator) Reload() error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	st, err := a.load()
	if err != nil {
		return err
	}
	a.state.Store(st)
	a.mu.Lock()
	for id, v := range a.verified {
		e := st.devices[id]
		if e == nil {
			e = st.tokens[id]
		}
		if e == nil || e.revoked || e.hash != v.hash {
			delete(a.verified, id)
		}
	}
	a.mu.Unlock()
	return nil
}

func (a *Authenticator) load() (*state, error) {
	st := &state{}
	if a.opts.Devices != "" {
		f, fi, err := loadDevices(a.opts.Devices, false)
		if err != nil {
			return nil, fmt.Errorf("devices: %w", err)
		}
		st.devicesFile = fi
		st.devices = make(map[string]*entry, len(f.Devices))
		p := DefaultParams
		for _, d := range f.Devices {
			h, _ := parsePHC(d.Hash) // checked by loadDevices
			st.devices[d.KeyID] = &entry{device: d.device(), hash: d.Hash, phc: h, revoked: d.Revoked != nil}
			p = h.p
		}
		st.deviceDummy = dummy(p) // the newest entry's parameters
	}
	if a.opts.Tokens != "" {
		f, fi, err := loadTokens(a.opts.Tokens, false)
		if err != nil {
			return nil, fmt.Errorf("tokens: %w", err)
		}
		st.tokensFile = fi
		st.tokens = make(map[string]*entry, len(f.Tokens))
		p := DefaultParams
		for _, t := range f.Tokens {
			h, _ := parsePHC(t.Hash)
			st.tokens[t.KeyID] = &entry{token: t.token(), hash: t.Hash, phc: h, revoked: t.Revoked != nil}
			p = h.p
		}
		st.tokenDummy = dummy(p)
	}
	return st, nil
}

// dummy returns a hash no token matches, with parameters p.
func dummy(p Params) phc {
	h := phc{p: p, salt: make([]byte, saltLen), hash: make([]byte, hashLen)}
	rand.Read(h.salt)
	rand.Read(h.hash)
	return h
}

// Device returns the device a bearer token belongs to (HTTP ingest).
func (a *Authenticator) Device(token string) (Device, error) {
	e, err := a.verify(KindDevice, token)
	if err != nil {
		return Device{}, err
	}
	return e.device, nil
}

// DeviceLogin returns the device for MQTT's CONNECT: username id and password
// token. A valid token of another device is ErrWrongDevice.
func (a *Authenticator) DeviceLogin(id, token string) (Device, error) {
	d, err := a.Device(token)
	if err != nil {
		return Device{}, err
	}
	if subtle.ConstantTimeCompare([]byte(d.ID), []byte(id)) != 1 {
		return Device{}, ErrWrongDevice
	}
	return d, nil
}

// API returns the role of an API bearer token. A device token is
// ErrWrongKind: it never authorizes the API.
func (a *Authenticator) API(token string) (Role, error) {
	e, err := a.verify(KindAPI, token)
	if err != nil {
		return "", err
	}
	return e.token.Role, nil
}

// verify finds token's entry and checks the token against its hash: from
// the cache if this token was verified before, otherwise with one argon2id
// run, against a dummy hash when the key id is unknown.
func (a *Authenticator) verify(kind Kind, token string) (*entry, error) {
	k, keyID, err := parseToken(token)
	if err != nil {
		return nil, err
	}
	if k != kind {
		return nil, ErrWrongKind
	}
	st := a.state.Load()
	keys, h := st.devices, st.deviceDummy
	if kind == KindAPI {
		keys, h = st.tokens, st.tokenDummy
	}
	if keys == nil {
		return nil, ErrNotConfigured
	}
	e := keys[keyID]
	sum := sha256.Sum256([]byte(token))
	if e != nil && !e.revoked && a.cached(keyID, e.hash, sum) {
		return e, nil
	}
	if e != nil {
		h = e.phc
	}
	ok := a.check(h, token)
	switch {
	case e == nil || !ok:
		return nil, ErrUnknown
	case e.revoked:
		return nil, ErrRevoked
	}
	a.mu.Lock()
	// A Reload may have revoked or replaced the entry since st was loaded:
	// remember only what the current state still holds.
	if sameEntry(keysOf(a.state.Load(), kind)[keyID], e) {
		a.verified[keyID] = verifiedToken{sum: sum, hash: e.hash}
	}
	a.mu.Unlock()
	return e, nil
}

func keysOf(st *state, kind Kind) map[string]*entry {
	if kind == KindAPI {
		return st.tokens
	}
	return st.devices
}

func sameEntry(cur, e *entry) bool {
	return cur != nil && !cur.revoked && cur.hash == e.hash
}

func (a *Authenticator) cached(keyID, hash string, sum [sha256.Size]byte) bool {
	a.mu.RLock()
	v, ok := a.verified[keyID]
	a.mu.RUnlock()
	return ok && v.hash == hash && subtle.ConstantTimeCompare(v.sum[:], sum[:]) == 1
}

// check runs argon2id, at most GOMAXPROCS at a time.
func (a *Authenticator) check(h phc, token string) bool {
	a.hashing <- struct{}{}
	defer func() { <-a.hashing }()
	a.hashes.Add(1)
	return h.verify(token)
}

// Entries returns how many entries of each file are active: what a status
// page or a start-up log shows.
func (a *Authenticator) Entries() (devices, tokens int) {
	st := a.state.Load()
	for _, e := range st.devices {
		if !e.revoked {
			devices++
		}
	}
	for _, e := range st.tokens {
		if !e.revoked {
			tokens++
		}
	}
	return devices, tokens
}

// IsRejection reports whether err is a refused credential (as opposed to,
// say, an I/O error reading a file).
func IsRejection(err error) bool {
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			return true
		}
	}
	return false
}

// DeviceByID returns the active device entry with id: how a listener names
// the device of a verified client certificate (its CN or a DNS SAN). False
// when there is no devices file, no such device, or only revoked entries.
func (a *Authenticator) DeviceByID(id string) (Device, bool) {
	for _, e := range a.state.Load().devices {
		if !e.revoked && e.device.ID == id {
			return e.device, true
		}
	}
	return Device{}, false
}
