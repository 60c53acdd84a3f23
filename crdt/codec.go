package crdt

import (
	"encoding/json"
	"fmt"

	"github.com/uncloud-mesh/uncloud/record"
)

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
	info, ok := record.Lookup(r.Kind())
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownKind, r.Kind())
	}
	data, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode %s record %s: %w", r.Kind(), r.Key(), err)
	}
	return json.Marshal(envelope{Kind: r.Kind(), V: info.Version, Data: data})
}

func decodeRecord(key string, raw []byte) (Record, error) {
	var env envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, fmt.Errorf("%w: decode envelope of %s: %w", record.ErrBadRecord, key, err)
	}
	info, ok := record.Lookup(env.Kind)
	if !ok {
		return nil, fmt.Errorf("%w: %q at %s", ErrUnknownKind, env.Kind, key)
	}
	if env.V != info.Version {
		return nil, fmt.Errorf("%w: %s record %s has version %d, this binary reads %d", ErrUnknownVersion, env.Kind, key, env.V, info.Version)
	}
	r := info.New()
	if err := json.Unmarshal(env.Data, r); err != nil {
		return nil, fmt.Errorf("%w: decode %s record %s: %w", record.ErrBadRecord, env.Kind, key, err)
	}
	if r.Key() != key {
		return nil, fmt.Errorf("%w: %s record names %s but is stored at %s", record.ErrBadRecord, env.Kind, r.Key(), key)
	}
	return r, nil
}
