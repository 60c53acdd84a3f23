package crdt

import (
	"errors"

	"github.com/uncloud-mesh/uncloud/record"
)

// Record is what the store keeps: any record.Record. The alias lets the
// engine's API name its unit without spelling out the record package.
type Record = record.Record

// Errors of the store and its codec; test with errors.Is. Validation
// errors (record.ErrBadKey, record.ErrBadRecord) belong to package record.
var (
	ErrNotFound       = errors.New("record not found")
	ErrUnknownKind    = errors.New("unknown record kind")
	ErrUnknownVersion = errors.New("unknown record encoding version")
	// ErrUnverified wraps a Verifier's refusal: the record is unsigned,
	// mis-signed, or signed by a machine that may not write it.
	ErrUnverified = errors.New("record not verified")
)
