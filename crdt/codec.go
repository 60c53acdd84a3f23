package crdt

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/uncloud-mesh/uncloud/record"
)

// kindInfo is what the codec knows about each kind: its prefix, the encoding
// version this binary writes and reads, and a constructor.
type kindInfo struct {
	prefix  string
	version int
	new     func() Record
}

// kinds is constant data, never mutated.
var kinds = map[record.Kind]kindInfo{
	record.KindMachine:   {record.MachinesPrefix, 1, func() Record { return &record.Machine{} }},
	record.KindContainer: {record.ContainersPrefix, 1, func() Record { return &record.Container{} }},
	record.KindService:   {record.ServicesPrefix, 1, func() Record { return &record.Service{} }},
	record.KindToken:     {record.TokensPrefix, 1, func() Record { return &record.Token{} }},
	record.KindRevoked:   {record.RevokedPrefix, 1, func() Record { return &record.Revoked{} }},
	record.KindCert:      {record.CertsPrefix, 1, func() Record { return &record.Cert{} }},
}

// envelope is the stored form: {"kind":"machine","v":1,"data":{...}}. The
// version is per kind, so one kind can evolve without touching the others.
// A binary that meets a version it does not know reports ErrUnknownVersion
// for that record instead of guessing (an older agent during a rolling
// upgrade skips what it cannot read).
type envelope struct {
	Kind record.Kind     `json:"kind"`
	V    int             `json:"v"`
	Data json.RawMessage `json:"data"`
}

func encodeRecord(r Record) ([]byte, error) {
	info, ok := kinds[r.Kind()]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownKind, r.Kind())
	}
	data, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode %s record %s: %w", r.Kind(), r.Key(), err)
	}
	return json.Marshal(envelope{Kind: r.Kind(), V: info.version, Data: data})
}

func decodeRecord(key string, raw []byte) (Record, error) {
	var env envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, fmt.Errorf("%w: decode envelope of %s: %w", record.ErrBadRecord, key, err)
	}
	info, ok := kinds[env.Kind]
	if !ok {
		return nil, fmt.Errorf("%w: %q at %s", ErrUnknownKind, env.Kind, key)
	}
	if env.V != info.version {
		return nil, fmt.Errorf("%w: %s record %s has version %d, this binary reads %d", ErrUnknownVersion, env.Kind, key, env.V, info.version)
	}
	r := info.new()
	if err := json.Unmarshal(env.Data, r); err != nil {
		return nil, fmt.Errorf("%w: decode %s record %s: %w", record.ErrBadRecord, env.Kind, key, err)
	}
	if r.Key() != key {
		return nil, fmt.Errorf("%w: %s record names %s but is stored at %s", record.ErrBadRecord, env.Kind, r.Key(), key)
	}
	return r, nil
}

// checkKey rejects keys outside the record scheme.
func checkKey(key string) error {
	for _, info := range kinds {
		if strings.HasPrefix(key, info.prefix) && len(key) > len(info.prefix) {
			return nil
		}
	}
	return fmt.Errorf("%w: %q is not under %s, %s, %s, %s or %s", record.ErrBadKey, key, record.MachinesPrefix, record.ContainersPrefix, record.ServicesPrefix, record.TokensPrefix, record.RevokedPrefix)
}
