package site

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/hashicorp/memberlist"
	"golang.org/x/crypto/hkdf"
)

// The gossip wire constants (docs/format/site.md).
const (
	// Label is memberlist's packet label: members of another kind of
	// cluster on the same port range are refused before decryption.
	Label = "holdfast-site"
	// KeyInfo is the HKDF-SHA256 info string the gossip key is derived with.
	KeyInfo = "holdfast site gossip v1"
	// KeySize is the gossip key's length: AES-256-GCM.
	KeySize = 32
	// MetaVersion is the first byte of a member's metadata.
	MetaVersion = 1
	// MetaLimit is the most metadata a member gossips (memberlist's limit).
	MetaLimit = memberlist.MetaMaxSize
)

// GossipKey derives the gossip key from the site secret: HKDF-SHA256 with no
// salt and info KeyInfo, KeySize bytes.
func GossipKey(secret []byte) ([]byte, error) {
	key := make([]byte, KeySize)
	if _, err := io.ReadFull(hkdf.New(sha256.New, secret, nil, []byte(KeyInfo)), key); err != nil {
		return nil, fmt.Errorf("site: derive gossip key: %w", err)
	}
	return key, nil
}

// meta is what a member gossips about itself: byte MetaVersion, then this
// struct as JSON.
type meta struct {
	HTTP    string `json:"http"`
	MQTT    string `json:"mqtt,omitempty"`
	Zone    string `json:"zone,omitempty"`
	Load    Load   `json:"load"`
	Leaving bool   `json:"leaving,omitempty"` // set by Leave before it leaves
}

// ErrMetaVersion is returned for metadata of a version this binary does not
// know.
var ErrMetaVersion = errors.New("site: unknown metadata version")

func (md meta) encode() ([]byte, error) {
	js, err := json.Marshal(md)
	if err != nil {
		return nil, fmt.Errorf("site: encode metadata: %w", err)
	}
	return append([]byte{MetaVersion}, js...), nil
}

func decodeMeta(b []byte) (meta, error) {
	var md meta
	if len(b) == 0 {
		return md, errors.New("site: no metadata")
	}
	if b[0] != MetaVersion {
		return md, fmt.Errorf("%w %d", ErrMetaVersion, b[0])
	}
	if err := json.Unmarshal(b[1:], &md); err != nil {
		return md, fmt.Errorf("site: decode metadata: %w", err)
	}
	return md, nil
}

// worstLoad is the load with the longest encoding: Start checks that the
// metadata fits MetaLimit with it, so no later SetLoad can overflow it.
var worstLoad = Load{
	EventsPerSec: -math.MaxFloat64 / 3,
	CPU:          -math.MaxFloat64 / 3,
	Buffer:       -math.MaxFloat64 / 3,
	LagRecords:   math.MaxUint64,
}
