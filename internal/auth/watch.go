package auth

import (
	"context"
	"os"
	"time"
)

// Watch polls the files every interval (their size, modification time, mode
// and inode: no file-notification dependency) and reloads when one changed,
// logging the outcome, until ctx is done. A change that fails to load is
// logged once, not at every poll; the previous credentials stay in force.
// The node also calls Reload on SIGHUP.
func (a *Authenticator) Watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var failed []os.FileInfo // the files as they were when a reload failed
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := a.state.Load()
		now := a.stat()
		if sameFiles(now, []os.FileInfo{st.devicesFile, st.tokensFile}) || (failed != nil && sameFiles(now, failed)) {
			continue
		}
		if err := a.Reload(); err != nil {
			failed = now
			a.opts.Logger.Error("credentials not reloaded: the previous ones stay in force", "err", err)
			continue
		}
		failed = nil
		devices, tokens := a.Entries()
		a.opts.Logger.Info("credentials reloaded", "devices", devices, "tokens", tokens)
	}
}

func (a *Authenticator) stat() []os.FileInfo {
	out := make([]os.FileInfo, 2)
	for i, p := range []string{a.opts.Devices, a.opts.Tokens} {
		if p != "" {
			out[i], _ = os.Stat(p)
		}
	}
	return out
}

func sameFiles(a, b []os.FileInfo) bool {
	for i := range a {
		x, y := a[i], b[i]
		if x == nil || y == nil {
			if x != y {
				return false
			}
			continue
		}
		if !os.SameFile(x, y) || x.Size() != y.Size() || !x.ModTime().Equal(y.ModTime()) || x.Mode() != y.Mode() {
			return false
		}
	}
	return true
}
