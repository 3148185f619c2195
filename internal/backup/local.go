package backup

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
	"github.com/holdfast-edge/holdfast/internal/process"
)

const (
	snapExt      = ".snap"
	uploadedExt  = ".uploaded" // appended to a snapshot's file name
	checkpointEx = ".ckpt"
	tmpExt       = ".tmp" // vfs.WriteAtomic's temporary files
)

// snapFile is a snapshot in the snapshot directory.
type snapFile struct {
	ms       int64 // its time, Unix milliseconds
	size     int64
	uploaded bool
}

func (s snapFile) time() time.Time { return time.UnixMilli(s.ms) }

func snapName(ms int64) string { return strconv.FormatInt(ms, 10) + snapExt }

// parseSnapName returns the time of a snapshot file name written by snapName.
func parseSnapName(name string) (int64, bool) {
	digits, ok := strings.CutSuffix(name, snapExt)
	if !ok {
		return 0, false
	}
	ms, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || strconv.FormatInt(ms, 10) != digits {
		return 0, false
	}
	return ms, true
}

// checkpoints returns the checkpoint files in dir (%020d.ckpt, as the
// processor writes them), highest offset first. A missing dir has none.
func checkpoints(dir string) ([]string, error) {
	names, err := vfs.OS.List(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	type ckpt struct {
		name string
		off  uint64
	}
	var cs []ckpt
	for _, name := range names {
		base, ok := strings.CutSuffix(name, checkpointEx)
		if !ok {
			continue
		}
		off, err := strconv.ParseUint(base, 10, 64)
		if err != nil {
			continue
		}
		cs = append(cs, ckpt{name, off})
	}
	slices.SortFunc(cs, func(a, b ckpt) int { return cmp.Compare(b.off, a.off) })
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.name
	}
	return out, nil
}

// newestCheckpoint reads the newest checkpoint in dir that decodes. It
// returns nil and no error when dir holds no checkpoint, skipped lists the
// damaged ones passed over, and an error is returned when every one is
// damaged or the dir cannot be read.
func newestCheckpoint(dir string) (c *process.Checkpoint, data []byte, file string, skipped []error, err error) {
	names, err := checkpoints(dir)
	if err != nil {
		return nil, nil, "", nil, fmt.Errorf("list checkpoints: %w", err)
	}
	for _, name := range names {
		path := filepath.Join(dir, name)
		data, err := vfs.ReadFile(vfs.OS, path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // the processor's retention removed it meanwhile
		}
		if err == nil {
			c, err = process.DecodeCheckpoint(data)
		}
		if err != nil {
			skipped = append(skipped, fmt.Errorf("%s: %w", path, err))
			continue
		}
		return c, data, path, skipped, nil
	}
	if len(skipped) > 0 {
		return nil, nil, "", skipped, fmt.Errorf("no usable checkpoint among %d: %w", len(skipped), errors.Join(skipped...))
	}
	return nil, nil, "", nil, nil
}

// scanSnapshots lists the snapshots in dir, oldest first. A missing dir has
// none.
func scanSnapshots(dir string) ([]snapFile, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	marked := map[string]bool{}
	for _, e := range entries {
		if base, ok := strings.CutSuffix(e.Name(), uploadedExt); ok {
			marked[base] = true
		}
	}
	var out []snapFile
	for _, e := range entries {
		ms, ok := parseSnapName(e.Name())
		if !ok || !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, snapFile{ms: ms, size: info.Size(), uploaded: marked[e.Name()]})
	}
	slices.SortFunc(out, func(a, b snapFile) int { return cmp.Compare(a.ms, b.ms) })
	return out, nil
}

// retain deletes all but the newest keep snapshots in dir with their
// markers, markers without a snapshot, and temporary files left by a crash
// in the middle of a write. It returns what is left, oldest first.
func retain(dir string, keep int) ([]snapFile, error) {
	snaps, err := scanSnapshots(dir)
	if err != nil {
		return nil, err
	}
	var errs []error
	remove := func(name string) {
		if err := vfs.OS.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	drop := snaps[:max(len(snaps)-keep, 0)]
	for _, s := range drop {
		// The marker first: a crash in between leaves an unmarked snapshot,
		// at worst uploaded twice, never a marked one that is not uploaded.
		remove(snapName(s.ms) + uploadedExt)
		remove(snapName(s.ms))
	}
	snaps = snaps[len(drop):]
	kept := map[string]bool{}
	for _, s := range snaps {
		kept[snapName(s.ms)] = true
	}
	names, err := vfs.OS.List(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, name := range names {
		if base, ok := strings.CutSuffix(name, uploadedExt); ok && !kept[base] {
			remove(name)
		}
		if strings.HasSuffix(name, tmpExt) {
			remove(name)
		}
	}
	if len(drop) > 0 {
		if err := vfs.OS.SyncDir(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return snaps, errors.Join(errs...)
}
