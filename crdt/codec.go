package crdt

import (
	"encoding/json"
	"fmt"

	"github.com/uncloud-mesh/uncloud/record"
)

// envelope is the stored form:
// {"kind":"machine","v":1,"data":{...},"by":"<machine id>","sig":"..."}.
// The version is per kind, so one kind can evolve without touching the
// others. A binary that meets a version it does not know reports
// ErrUnknownVersion for that record instead of guessing (an older agent
// during a rolling upgrade skips what it cannot read). By and Sig are the
// writer's signature over SignedMessage (see signed.go); a store without
// a Signer writes neither.
type envelope struct {
	Kind record.Kind     `json:"kind"`
	V    int             `json:"v"`
	Data json.RawMessage `json:"data"`
	By   string          `json:"by,omitempty"`
	Sig  []byte          `json:"sig,omitempty"`
}

func encodeRecord(r Record, signer Signer) ([]byte, error) {
	info, ok := record.Lookup(r.Kind())
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownKind, r.Kind())
	}
	data, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode %s record %s: %w", r.Kind(), r.Key(), err)
	}
	env := envelope{Kind: r.Kind(), V: info.Version, Data: data}
	if signer != nil {
		env.By = signer.SignerID()
		env.Sig = signer.Sign(SignedMessage(r.Key(), env.Kind, env.V, data))
	}
	return json.Marshal(env)
}

func decodeRecord(key string, raw []byte) (Record, error) {
	s, err := decodeSigned(key, raw)
	return s.Record, err
}

// decodeSigned decodes a stored value without checking its signature.
func decodeSigned(key string, raw []byte) (Signed, error) {
	var env envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return Signed{}, fmt.Errorf("%w: decode envelope of %s: %w", record.ErrBadRecord, key, err)
	}
	info, ok := record.Lookup(env.Kind)
	if !ok {
		return Signed{}, fmt.Errorf("%w: %q at %s", ErrUnknownKind, env.Kind, key)
	}
	if env.V != info.Version {
		return Signed{}, fmt.Errorf("%w: %s record %s has version %d, this binary reads %d", ErrUnknownVersion, env.Kind, key, env.V, info.Version)
	}
	r := info.New()
	if err := json.Unmarshal(env.Data, r); err != nil {
		return Signed{}, fmt.Errorf("%w: decode %s record %s: %w", record.ErrBadRecord, env.Kind, key, err)
	}
	if r.Key() != key {
		return Signed{}, fmt.Errorf("%w: %s record names %s but is stored at %s", record.ErrBadRecord, env.Kind, r.Key(), key)
	}
	return Signed{Key: key, Record: r, By: env.By, Sig: env.Sig, Msg: SignedMessage(key, env.Kind, env.V, env.Data)}, nil
}

func encodeEnvelope(kind record.Kind, v int, data []byte, by string, sig []byte) ([]byte, error) {
	if !json.Valid(data) {
		return nil, fmt.Errorf("%w: %s record data is not JSON", record.ErrBadRecord, kind)
	}
	return json.Marshal(envelope{Kind: kind, V: v, Data: data, By: by, Sig: sig})
}
