package auth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/holdfast-edge/holdfast/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testParams keep argon2id cheap in tests; the hash string carries them.
var testParams = Params{Memory: 64, Time: 1, Threads: 1}

type fixture struct {
	dir, devices, tokens string
}

func newFixture(t *testing.T) fixture {
	dir := t.TempDir()
	return fixture{dir: dir, devices: filepath.Join(dir, "devices.yaml"), tokens: filepath.Join(dir, "tokens.yaml")}
}

func (f fixture) addDevice(t *testing.T, id string, streams ...string) string {
	t.Helper()
	tok, err := addDevice(f.devices, id, streams, testParams)
	require.NoError(t, err)
	return tok
}

func (f fixture) addToken(t *testing.T, name string, role Role) string {
	t.Helper()
	tok, err := addToken(f.tokens, name, role, testParams)
	require.NoError(t, err)
	return tok
}

func (f fixture) open(t *testing.T) *Authenticator {
	t.Helper()
	opts := Options{}
	if _, err := os.Stat(f.devices); err == nil {
		opts.Devices = f.devices
	}
	if _, err := os.Stat(f.tokens); err == nil {
		opts.Tokens = f.tokens
	}
	a, err := New(opts)
	require.NoError(t, err)
	return a
}

// hashed returns how many argon2id runs fn made.
func hashed(a *Authenticator, fn func()) int64 {
	before := a.hashes.Load()
	fn()
	return a.hashes.Load() - before
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	return fi.Mode().Perm()
}

func TestAddListRevokeDevice(t *testing.T) {
	f := newFixture(t)
	tok := f.addDevice(t, "fridge-7", "temperature", "door")
	require.Len(t, tok, TokenLen)
	require.True(t, strings.HasPrefix(tok, "hfd_"), tok)
	kind, keyID, err := parseToken(tok)
	require.NoError(t, err)
	require.Equal(t, KindDevice, kind)

	require.Equal(t, os.FileMode(0o600), mode(t, f.devices))
	data, err := os.ReadFile(f.devices)
	require.NoError(t, err)
	require.NotContains(t, string(data), tok)
	require.NotContains(t, string(data), tok[5+keyIDLen:], "the secret is not in the file")
	require.Contains(t, string(data), "$argon2id$v=19$m=64,t=1,p=1$")

	list, err := ListDevices(f.devices)
	require.NoError(t, err)
	require.Len(t, list, 1)
	d := list[0]
	require.Equal(t, "fridge-7", d.ID)
	require.Equal(t, keyID, d.KeyID)
	require.Equal(t, []string{"temperature", "door"}, d.Streams)
	require.True(t, d.Active())
	require.WithinDuration(t, time.Now(), d.Created, 5*time.Second)
	require.True(t, d.Allows("door"))
	require.False(t, d.Allows("humidity"))

	_, err = addDevice(f.devices, "fridge-7", nil, testParams)
	require.ErrorIs(t, err, ErrExists)

	require.NoError(t, RevokeDevice(f.devices, "fridge-7"))
	require.ErrorIs(t, RevokeDevice(f.devices, "fridge-7"), ErrNotFound)
	require.ErrorIs(t, RevokeDevice(f.devices, "nobody"), ErrNotFound)
	list, err = ListDevices(f.devices)
	require.NoError(t, err)
	require.False(t, list[0].Active())

	// Added again after revocation: a new entry, a new token; the old one stays refused.
	tok2 := f.addDevice(t, "fridge-7")
	a := f.open(t)
	_, err = a.Device(tok)
	require.ErrorIs(t, err, ErrRevoked)
	d, err = a.Device(tok2)
	require.NoError(t, err)
	require.Equal(t, "fridge-7", d.ID)
	require.True(t, d.Allows("anything"), "no streams: any stream")
	require.Equal(t, os.FileMode(0o600), mode(t, f.devices))
}

func TestAddRefusesBadNames(t *testing.T) {
	f := newFixture(t)
	for _, id := range []string{"", "a/b", "a+b", "#", "*", "a\nb", strings.Repeat("x", 129)} {
		_, err := addDevice(f.devices, id, nil, testParams)
		require.Error(t, err, "%q", id)
	}
	_, err := addDevice(f.devices, "ok", []string{"bad/stream"}, testParams)
	require.Error(t, err)
	_, err = addToken(f.tokens, "grafana", "root", testParams)
	require.Error(t, err)
	_, err = os.Stat(f.devices)
	require.ErrorIs(t, err, os.ErrNotExist, "nothing written")
}

func TestTokens(t *testing.T) {
	f := newFixture(t)
	read := f.addToken(t, "grafana", RoleRead)
	admin := f.addToken(t, "ops", RoleAdmin)
	require.True(t, strings.HasPrefix(read, "hft_"))
	require.Equal(t, os.FileMode(0o600), mode(t, f.tokens))
	data, err := os.ReadFile(f.tokens)
	require.NoError(t, err)
	require.NotContains(t, string(data), read[5+keyIDLen:])

	_, err = addToken(f.tokens, "grafana", RoleAdmin, testParams)
	require.ErrorIs(t, err, ErrExists)
	list, err := ListTokens(f.tokens)
	require.NoError(t, err)
	require.Equal(t, []string{"grafana", "ops"}, []string{list[0].Name, list[1].Name})
	require.Equal(t, []Role{RoleRead, RoleAdmin}, []Role{list[0].Role, list[1].Role})

	f.addDevice(t, "fridge-7")
	a := f.open(t)
	r, err := a.API(read)
	require.NoError(t, err)
	require.Equal(t, RoleRead, r)
	require.True(t, r.Allows(RoleRead))
	require.False(t, r.Allows(RoleAdmin))
	r, err = a.API(admin)
	require.NoError(t, err)
	require.True(t, r.Allows(RoleAdmin) && r.Allows(RoleRead))
	require.False(t, Role("").Allows(RoleRead))

	require.NoError(t, RevokeToken(f.tokens, "grafana"))
	require.ErrorIs(t, RevokeToken(f.tokens, "grafana"), ErrNotFound)
	require.NoError(t, a.Reload())
	_, err = a.API(read)
	require.ErrorIs(t, err, ErrRevoked)
	list, err = ListTokens(f.tokens)
	require.NoError(t, err)
	require.False(t, list[0].Active())
	require.True(t, list[1].Active())
}

func TestVerifyRefusals(t *testing.T) {
	f := newFixture(t)
	dev := f.addDevice(t, "fridge-7")
	api := f.addToken(t, "grafana", RoleRead)
	a := f.open(t)
	unknownKey, _, _ := newToken(KindDevice)
	wrongSecret := dev[:5+keyIDLen] + strings.Repeat("a", secretLen)

	for name, c := range map[string]struct {
		got  func() error
		want error
	}{
		"empty":              {func() error { _, err := a.Device(""); return err }, ErrNoCredentials},
		"garbage":            {func() error { _, err := a.Device("password"); return err }, ErrMalformed},
		"upper case":         {func() error { _, err := a.Device(strings.ToUpper(dev)); return err }, ErrMalformed},
		"unknown key":        {func() error { _, err := a.Device(unknownKey); return err }, ErrUnknown},
		"wrong secret":       {func() error { _, err := a.Device(wrongSecret); return err }, ErrUnknown},
		"api token ingests":  {func() error { _, err := a.Device(api); return err }, ErrWrongKind},
		"device token reads": {func() error { _, err := a.API(dev); return err }, ErrWrongKind},
		"mqtt other device":  {func() error { _, err := a.DeviceLogin("fridge-8", dev); return err }, ErrWrongDevice},
		"mqtt no username":   {func() error { _, err := a.DeviceLogin("", dev); return err }, ErrWrongDevice},
		"mqtt no password":   {func() error { _, err := a.DeviceLogin("fridge-7", ""); return err }, ErrNoCredentials},
	} {
		err := c.got()
		require.ErrorIs(t, err, c.want, name)
		require.True(t, IsRejection(err), name)
	}
	d, err := a.DeviceLogin("fridge-7", dev)
	require.NoError(t, err)
	require.Equal(t, "fridge-7", d.ID)

	none, err := New(Options{})
	require.NoError(t, err)
	_, err = none.Device(dev)
	require.ErrorIs(t, err, ErrNotConfigured)
	_, err = none.API(api)
	require.ErrorIs(t, err, ErrNotConfigured)
	require.False(t, none.HasDevices() || none.HasTokens())
	require.True(t, a.HasDevices() && a.HasTokens())
}

// A wrong token costs one argon2id run whether or not its key exists or is
// revoked; a verified token costs none the next time.
func TestSameWork(t *testing.T) {
	f := newFixture(t)
	dev := f.addDevice(t, "fridge-7")
	revoked := f.addDevice(t, "fridge-8")
	require.NoError(t, RevokeDevice(f.devices, "fridge-8"))
	api := f.addToken(t, "grafana", RoleRead)
	a := f.open(t)
	unknownDev, _, _ := newToken(KindDevice)
	unknownAPI, _, _ := newToken(KindAPI)
	wrongSecret := dev[:5+keyIDLen] + strings.Repeat("a", secretLen)

	for name, fn := range map[string]func(){
		"unknown device key": func() { a.Device(unknownDev) },
		"wrong secret":       func() { a.Device(wrongSecret) },
		"revoked":            func() { a.Device(revoked) },
		"revoked again":      func() { a.Device(revoked) },
		"unknown api key":    func() { a.API(unknownAPI) },
		"mqtt unknown key":   func() { a.DeviceLogin("fridge-7", unknownDev) },
	} {
		require.EqualValues(t, 1, hashed(a, fn), name)
	}
	require.EqualValues(t, 1, hashed(a, func() { _, err := a.Device(dev); require.NoError(t, err) }), "first verification")
	require.EqualValues(t, 0, hashed(a, func() { _, err := a.Device(dev); require.NoError(t, err) }), "cached")
	require.EqualValues(t, 0, hashed(a, func() { _, err := a.DeviceLogin("fridge-7", dev); require.NoError(t, err) }), "cached for MQTT too")
	require.EqualValues(t, 1, hashed(a, func() { a.Device(wrongSecret) }), "a wrong secret of a cached key is still hashed")
	require.EqualValues(t, 1, hashed(a, func() { a.API(api) }))
	require.EqualValues(t, 0, hashed(a, func() { a.API(api) }))
	require.EqualValues(t, 0, hashed(a, func() { a.Device("nonsense") }), "a malformed token is refused unhashed: its shape is public")

	// The dummy takes the parameters of the file's entries.
	require.Equal(t, testParams, a.state.Load().deviceDummy.p)
}

func TestCacheDroppedOnRevokeAndReload(t *testing.T) {
	f := newFixture(t)
	dev := f.addDevice(t, "fridge-7")
	other := f.addDevice(t, "fridge-8")
	a := f.open(t)
	for _, tok := range []string{dev, other} {
		_, err := a.Device(tok)
		require.NoError(t, err)
	}
	require.Len(t, a.verified, 2)

	// Adding a device drops nothing.
	third := f.addDevice(t, "fridge-9")
	require.NoError(t, a.Reload())
	require.Len(t, a.verified, 2)
	require.EqualValues(t, 0, hashed(a, func() { a.Device(dev) }))
	_, err := a.Device(third)
	require.NoError(t, err)

	require.NoError(t, RevokeDevice(f.devices, "fridge-7"))
	_, err = a.Device(dev)
	require.NoError(t, err, "still valid until the node reloads")
	require.NoError(t, a.Reload())
	_, err = a.Device(dev)
	require.ErrorIs(t, err, ErrRevoked)
	require.NotContains(t, a.verified, a.mustKey(t, dev))
	require.EqualValues(t, 0, hashed(a, func() { a.Device(other) }), "the others stay cached")

	// A file that loses the entry altogether drops it too.
	require.NoError(t, os.WriteFile(f.devices, []byte("version: 1\ndevices: []\n"), 0o600))
	require.NoError(t, a.Reload())
	_, err = a.Device(other)
	require.ErrorIs(t, err, ErrUnknown)
	require.Empty(t, a.verified)
}

func (a *Authenticator) mustKey(t *testing.T, token string) string {
	_, k, err := parseToken(token)
	require.NoError(t, err)
	return k
}

func TestReloadKeepsOldStateOnError(t *testing.T) {
	f := newFixture(t)
	dev := f.addDevice(t, "fridge-7")
	a := f.open(t)
	for _, bad := range []string{
		"devices: [{id: x}",         // not YAML
		"version: 2\ndevices: []\n", // unknown version
		"version: 1\nextra: 1\n",    // unknown key
		"version: 1\ndevices: [{id: fridge-7, key_id: short, hash: x}]\n",
	} {
		require.NoError(t, os.WriteFile(f.devices, []byte(bad), 0o600))
		require.Error(t, a.Reload(), bad)
		_, err := a.Device(dev)
		require.NoError(t, err, "old credentials stay after %q", bad)
	}
	require.NoError(t, os.Remove(f.devices))
	require.ErrorIs(t, a.Reload(), os.ErrNotExist)
	_, err := a.Device(dev)
	require.NoError(t, err)
}

func TestFileChecks(t *testing.T) {
	f := newFixture(t)
	tok := f.addDevice(t, "fridge-7")
	data, err := os.ReadFile(f.devices)
	require.NoError(t, err)
	keyID := tokKey(t, tok)
	hash := hashOf(t, data)
	for name, body := range map[string]string{
		"duplicate key id":    "version: 1\ndevices:\n- {id: a, key_id: " + keyID + ", hash: '" + hash + "'}\n- {id: b, key_id: " + keyID + ", hash: '" + hash + "'}\n",
		"two active entries":  "version: 1\ndevices:\n- {id: a, key_id: " + keyID + ", hash: '" + hash + "'}\n- {id: a, key_id: bbbbbbbbbbbbbbbb, hash: '" + hash + "'}\n",
		"bad id":              "version: 1\ndevices:\n- {id: a/b, key_id: " + keyID + ", hash: '" + hash + "'}\n",
		"bad stream":          "version: 1\ndevices:\n- {id: a, key_id: " + keyID + ", hash: '" + hash + "', streams: ['#']}\n",
		"bcrypt hash":         "version: 1\ndevices:\n- {id: a, key_id: " + keyID + ", hash: '$2a$10$abc'}\n",
		"huge memory":         "version: 1\ndevices:\n- {id: a, key_id: " + keyID + ", hash: '" + strings.Replace(hash, "m=64", "m=4194304", 1) + "'}\n",
		"trailing junk field": "version: 1\ndevices:\n- {id: a, key_id: " + keyID + ", hash: '" + hash + "', token: x}\n",
	} {
		require.NoError(t, os.WriteFile(f.devices, []byte(body), 0o600))
		_, err := ListDevices(f.devices)
		require.Error(t, err, name)
		require.Contains(t, err.Error(), f.devices, name)
	}
	// An empty file is an empty list.
	require.NoError(t, os.WriteFile(f.devices, nil, 0o600))
	list, err := ListDevices(f.devices)
	require.NoError(t, err)
	require.Empty(t, list)
}

func tokKey(t *testing.T, tok string) string {
	_, k, err := parseToken(tok)
	require.NoError(t, err)
	return k
}

func hashOf(t *testing.T, file []byte) string {
	i := bytes.Index(file, []byte("$argon2id"))
	require.GreaterOrEqual(t, i, 0)
	j := bytes.IndexByte(file[i:], '\n')
	return strings.Trim(string(file[i:i+j]), `'"`)
}

func TestModeRefused(t *testing.T) {
	f := newFixture(t)
	f.addDevice(t, "fridge-7")
	f.addToken(t, "grafana", RoleRead)
	for _, m := range []os.FileMode{0o644, 0o604, 0o620, 0o602, 0o666} {
		require.NoError(t, os.Chmod(f.devices, m))
		_, err := New(Options{Devices: f.devices, Tokens: f.tokens})
		require.ErrorIs(t, err, ErrFileMode, "%04o", m)
		require.Contains(t, err.Error(), "chmod 600 "+f.devices)
		_, err = ListDevices(f.devices)
		require.ErrorIs(t, err, ErrFileMode)
		_, err = addDevice(f.devices, "fridge-8", nil, testParams)
		require.ErrorIs(t, err, ErrFileMode, "a command does not write through a bad mode")
	}
	for _, m := range []os.FileMode{0o600, 0o400, 0o640} {
		require.NoError(t, os.Chmod(f.devices, m))
		_, err := New(Options{Devices: f.devices, Tokens: f.tokens})
		require.NoError(t, err, "%04o", m)
	}
	require.NoError(t, os.Chmod(f.tokens, 0o644))
	_, err := New(Options{Devices: f.devices, Tokens: f.tokens})
	require.ErrorIs(t, err, ErrFileMode)
	require.Contains(t, err.Error(), "chmod 600 "+f.tokens)
}

func TestCreated0600(t *testing.T) {
	f := newFixture(t)
	// A stale temporary file with a loose mode does not lend it to the result.
	require.NoError(t, os.WriteFile(f.devices+".tmp", []byte("x"), 0o644))
	f.addDevice(t, "fridge-7")
	f.addToken(t, "grafana", RoleAdmin)
	require.Equal(t, os.FileMode(0o600), mode(t, f.devices))
	require.Equal(t, os.FileMode(0o600), mode(t, f.tokens))
	require.Equal(t, os.FileMode(0o600), mode(t, f.devices+".lock"))
	_, err := os.Stat(f.devices + ".tmp")
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestConcurrentAddsLoseNothing(t *testing.T) {
	f := newFixture(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			_, err := addDevice(f.devices, "dev-"+string(rune('a'+i)), nil, testParams)
			require.NoError(t, err)
		})
	}
	wg.Wait()
	list, err := ListDevices(f.devices)
	require.NoError(t, err)
	require.Len(t, list, 8)
}

type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestWatch(t *testing.T) {
	f := newFixture(t)
	dev := f.addDevice(t, "fridge-7")
	f.addToken(t, "grafana", RoleRead)
	var logs logBuf
	a, err := New(Options{Devices: f.devices, Tokens: f.tokens, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.Watch(ctx, 5*time.Millisecond) }()
	defer func() { cancel(); <-done }()

	added := f.addDevice(t, "fridge-8")
	testutil.Eventually(t, "the added device is accepted", func() bool { _, err := a.Device(added); return err == nil })
	require.NoError(t, RevokeDevice(f.devices, "fridge-7"))
	testutil.Eventually(t, "the revoked device is refused", func() bool {
		_, err := a.Device(dev)
		return errors.Is(err, ErrRevoked)
	})

	// A new file with a bad mode is refused, logged once, and the
	// credentials stay; the fix (a chmod alone) is noticed.
	next := filepath.Join(f.dir, "next.yaml")
	data, err := os.ReadFile(f.devices)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(next, data, 0o600))
	third, err := addDevice(next, "fridge-9", nil, testParams)
	require.NoError(t, err)
	require.NoError(t, os.Chmod(next, 0o644))
	require.NoError(t, os.Rename(next, f.devices))
	testutil.Eventually(t, "the refusal is logged", func() bool { return strings.Contains(logs.String(), "chmod 600") })
	time.Sleep(50 * time.Millisecond)
	require.Equal(t, 1, strings.Count(logs.String(), "chmod 600"), logs.String())
	_, err = a.Device(added)
	require.NoError(t, err)
	_, err = a.Device(third)
	require.ErrorIs(t, err, ErrUnknown)
	require.NoError(t, os.Chmod(f.devices, 0o600))
	testutil.Eventually(t, "the fix is noticed", func() bool { _, err := a.Device(third); return err == nil })
	require.Contains(t, logs.String(), "devices=2 tokens=1")
}

func TestEntries(t *testing.T) {
	f := newFixture(t)
	f.addDevice(t, "a")
	f.addDevice(t, "b")
	require.NoError(t, RevokeDevice(f.devices, "a"))
	f.addToken(t, "grafana", RoleRead)
	d, tk := f.open(t).Entries()
	require.Equal(t, [2]int{1, 1}, [2]int{d, tk})
}

func TestParseBearer(t *testing.T) {
	for in, want := range map[string]string{
		"Bearer abc":   "abc",
		"bearer abc":   "abc",
		"BEARER  abc ": "abc",
	} {
		got, err := ParseBearer(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got)
	}
	for in, want := range map[string]error{
		"":            ErrNoCredentials,
		"Basic abc":   ErrMalformed,
		"Bearer":      ErrMalformed,
		"Bearer ":     ErrMalformed,
		"Bearer a b":  ErrMalformed,
		"Bearer a\tb": ErrMalformed,
		"Bearerabc":   ErrMalformed,
		"Token abc":   ErrMalformed,
	} {
		_, err := ParseBearer(in)
		require.ErrorIs(t, err, want, "%q", in)
	}
}

func TestParsePHC(t *testing.T) {
	h, err := hashToken("x", testParams)
	require.NoError(t, err)
	p, err := parsePHC(h)
	require.NoError(t, err)
	require.Equal(t, testParams, p.p)
	require.True(t, p.verify("x"))
	require.False(t, p.verify("y"))
	require.Equal(t, h, p.String())
	for _, bad := range []string{
		"", "$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=16$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=64,t=0,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=64,t=17,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=64,t=1,p=0$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=64,t=1,p=300$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=4,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=2000000,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=64,t=1,p=1,x=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=64,t=1,p=1$c2E$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
		"$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA==",
	} {
		_, err := parsePHC(bad)
		require.Error(t, err, bad)
	}
}

func TestTokenShape(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		tok, keyID, err := newToken(KindAPI)
		require.NoError(t, err)
		require.Len(t, tok, TokenLen)
		require.False(t, seen[tok])
		seen[tok] = true
		k, id, err := parseToken(tok)
		require.NoError(t, err)
		require.Equal(t, KindAPI, k)
		require.Equal(t, keyID, id)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.Failure(TransportHTTP, ErrUnknown)
	m.Failure(TransportHTTP, ErrUnknown)
	m.Failure(TransportMQTT, ErrWrongDevice)
	m.Failure(TransportAPI, errors.New("disk on fire"))
	m.RateLimited(TransportMQTT)
	require.Equal(t, 2.0, promtest.ToFloat64(m.failures.WithLabelValues("http", "unknown")))
	require.Equal(t, 1.0, promtest.ToFloat64(m.failures.WithLabelValues("mqtt", "wrong_device")))
	require.Equal(t, 1.0, promtest.ToFloat64(m.failures.WithLabelValues("api", "error")))
	require.Equal(t, 1.0, promtest.ToFloat64(m.limited.WithLabelValues("mqtt")))
	var nilM *Metrics
	nilM.Failure("http", ErrUnknown)
	nilM.RateLimited("http")

	for err, want := range map[error]string{
		ErrNoCredentials: "no_credentials", ErrMalformed: "malformed", ErrUnknown: "unknown",
		ErrRevoked: "revoked", ErrWrongDevice: "wrong_device", ErrWrongKind: "wrong_kind",
		ErrForbidden: "forbidden", ErrRateLimited: "rate_limited", ErrNotConfigured: "not_configured",
	} {
		require.Equal(t, want, Reason(err))
		require.Equal(t, want, Reason(fmt.Errorf("ctx: %w", err)))
	}
}

// Verifications racing with reloads that add and revoke devices: a revoked
// token is refused once its Reload has returned, whatever was cached.
func TestConcurrentVerifyAndReload(t *testing.T) {
	f := newFixture(t)
	keep := f.addDevice(t, "keep")
	gone := f.addDevice(t, "gone")
	a := f.open(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				if _, err := a.Device(keep); err != nil {
					t.Errorf("keep refused: %v", err)
					return
				}
				a.Device(gone)
			}
		})
	}
	for i := range 5 {
		f.addDevice(t, fmt.Sprintf("more-%d", i))
		require.NoError(t, a.Reload())
	}
	require.NoError(t, RevokeDevice(f.devices, "gone"))
	require.NoError(t, a.Reload())
	for range 20 {
		_, err := a.Device(gone)
		require.ErrorIs(t, err, ErrRevoked)
	}
	cancel()
	wg.Wait()
	_, err := a.Device(gone)
	require.ErrorIs(t, err, ErrRevoked)
}
