package auth

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
	"github.com/holdfast-edge/holdfast/internal/event"
)

// ErrFileMode: a credentials file others may read, or anyone but its owner
// may write. The error names the file and the fix.
var ErrFileMode = errors.New("auth: credentials file is readable or writable by others")

// fileVersion is the version of the devices and tokens files.
const fileVersion = 1

// maxFileBytes bounds what a reader takes from a credentials file.
const maxFileBytes = 64 << 20

// badModeBits are the permission bits a credentials file must not have:
// readable by others, writable by group or others.
const badModeBits = 0o026

type devicesFile struct {
	Version int           `yaml:"version"`
	Devices []deviceEntry `yaml:"devices"`
}

type deviceEntry struct {
	ID      string     `yaml:"id"`
	KeyID   string     `yaml:"key_id"`
	Hash    string     `yaml:"hash"`
	Streams []string   `yaml:"streams,omitempty,flow"`
	Created time.Time  `yaml:"created"`
	Revoked *time.Time `yaml:"revoked,omitempty"`
}

type tokensFile struct {
	Version int          `yaml:"version"`
	Tokens  []tokenEntry `yaml:"tokens"`
}

type tokenEntry struct {
	Name    string     `yaml:"name"`
	Role    Role       `yaml:"role"`
	KeyID   string     `yaml:"key_id"`
	Hash    string     `yaml:"hash"`
	Created time.Time  `yaml:"created"`
	Revoked *time.Time `yaml:"revoked,omitempty"`
}

const devicesHeader = "# holdfast devices (docs/format/auth.md). Written by `holdfast device add`;\n" +
	"# tokens are stored only as argon2id hashes. Keep this file 0600.\n"

const tokensHeader = "# holdfast API tokens (docs/format/auth.md). Written by `holdfast token add`;\n" +
	"# tokens are stored only as argon2id hashes. Keep this file 0600.\n"

// readYAML decodes the credentials file at path into v, refusing a file with
// a mode others could read or write, unknown keys and trailing documents.
// It returns the file's FileInfo for change detection.
func readYAML(path string, v any) (os.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("%s is a directory", path)
	}
	if perm := fi.Mode().Perm(); perm&badModeBits != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o; fix it with: chmod 600 %s", ErrFileMode, path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFileBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxFileBytes)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return fi, nil
}

// writeYAML replaces path with header and v as YAML, atomically, 0600.
func writeYAML(path, header string, v any) error {
	body, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	// WriteAtomic's temporary file keeps the mode it was created with: start
	// from none, so it is created 0600.
	if err := os.Remove(path + ".tmp"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := vfs.WriteAtomic(vfs.OS, path, append([]byte(header), body...)); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// loadDevices reads and checks a devices file. A missing file is an error
// unless missingOK, when it reads as empty.
func loadDevices(path string, missingOK bool) (devicesFile, os.FileInfo, error) {
	var f devicesFile
	fi, err := readYAML(path, &f)
	if errors.Is(err, fs.ErrNotExist) && missingOK {
		return devicesFile{Version: fileVersion}, nil, nil
	}
	if err != nil {
		return f, nil, err
	}
	if err := f.check(); err != nil {
		return f, nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, fi, nil
}

func (f *devicesFile) check() error {
	if f.Version != fileVersion && !(f.Version == 0 && len(f.Devices) == 0) {
		return fmt.Errorf("version %d is not %d", f.Version, fileVersion)
	}
	f.Version = fileVersion
	keys := map[string]bool{}
	active := map[string]bool{}
	for i, d := range f.Devices {
		at := func(format string, args ...any) error {
			return fmt.Errorf("devices[%d] (%q): %s", i, d.ID, fmt.Sprintf(format, args...))
		}
		if why := event.ValidName(d.ID); why != "" {
			return at("id %s", why)
		}
		if err := checkKey(keys, d.KeyID, d.Hash); err != nil {
			return at("%v", err)
		}
		for _, s := range d.Streams {
			if why := event.ValidName(s); why != "" {
				return at("stream %q %s", s, why)
			}
		}
		if d.Revoked == nil {
			if active[d.ID] {
				return at("a second active entry for the id (revoke one)")
			}
			active[d.ID] = true
		}
	}
	return nil
}

// loadTokens is loadDevices for a tokens file.
func loadTokens(path string, missingOK bool) (tokensFile, os.FileInfo, error) {
	var f tokensFile
	fi, err := readYAML(path, &f)
	if errors.Is(err, fs.ErrNotExist) && missingOK {
		return tokensFile{Version: fileVersion}, nil, nil
	}
	if err != nil {
		return f, nil, err
	}
	if err := f.check(); err != nil {
		return f, nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, fi, nil
}

func (f *tokensFile) check() error {
	if f.Version != fileVersion && !(f.Version == 0 && len(f.Tokens) == 0) {
		return fmt.Errorf("version %d is not %d", f.Version, fileVersion)
	}
	f.Version = fileVersion
	keys := map[string]bool{}
	active := map[string]bool{}
	for i, t := range f.Tokens {
		at := func(format string, args ...any) error {
			return fmt.Errorf("tokens[%d] (%q): %s", i, t.Name, fmt.Sprintf(format, args...))
		}
		if why := event.ValidName(t.Name); why != "" {
			return at("name %s", why)
		}
		if _, err := ParseRole(string(t.Role)); err != nil {
			return at("%v", err)
		}
		if err := checkKey(keys, t.KeyID, t.Hash); err != nil {
			return at("%v", err)
		}
		if t.Revoked == nil {
			if active[t.Name] {
				return at("a second active entry for the name (revoke one)")
			}
			active[t.Name] = true
		}
	}
	return nil
}

func checkKey(seen map[string]bool, keyID, hash string) error {
	if !validKeyID(keyID) {
		return fmt.Errorf("key_id %q is not %d base32 characters", keyID, keyIDLen)
	}
	if seen[keyID] {
		return fmt.Errorf("key_id %q is used twice", keyID)
	}
	seen[keyID] = true
	if _, err := parsePHC(hash); err != nil {
		return err
	}
	return nil
}
