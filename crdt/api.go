package crdt

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/uncloud-mesh/uncloud/record"
)

// Get returns the record at key, or ErrNotFound.
func (s *Store) Get(ctx context.Context, key string) (Record, error) {
	if err := record.CheckKey(key); err != nil {
		return nil, err
	}
	raw, err := s.getRaw(ctx, key)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("get %s: %w", key, ErrNotFound)
		}
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	r, err := s.accept(key, raw)
	if errors.Is(err, ErrUnverified) {
		return nil, fmt.Errorf("get %s: %w (%w)", key, ErrNotFound, err)
	}
	return r, err
}

// Put stores r at key, which must be r.Key(). It returns once the write is
// merged locally and its head handed to gossip; it never waits for other
// machines.
func (s *Store) Put(ctx context.Context, key string, r Record) error {
	if r == nil {
		return fmt.Errorf("put %s: %w: nil record", key, record.ErrBadRecord)
	}
	if err := r.Validate(); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if r.Key() != key {
		return fmt.Errorf("put: %w: %s record belongs at %s, not %s", record.ErrBadKey, r.Kind(), r.Key(), key)
	}
	raw, err := encodeRecord(r, s.cfg.Signer)
	if err != nil {
		return err
	}
	if err := s.putRaw(ctx, key, raw); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	s.afterLocalWrite(ctx, key)
	return nil
}

// Delete removes the record at key; deleting a missing key is not an error.
// A concurrent re-write on another machine wins over the delete.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := record.CheckKey(key); err != nil {
		return err
	}
	if err := s.deleteRaw(ctx, key); err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	s.afterLocalWrite(ctx, key)
	return nil
}

// List returns the records whose keys start with prefix, sorted by key.
// Records this binary cannot decode (a newer version written by an upgraded
// machine) are skipped and logged.
func (s *Store) List(ctx context.Context, prefix string) ([]Record, error) {
	if !strings.HasPrefix(prefix, "/") {
		return nil, fmt.Errorf("list %q: %w: prefix must start with /", prefix, record.ErrBadKey)
	}
	entries, err := s.queryRaw(ctx, queryPrefix(prefix))
	if err != nil {
		return nil, err
	}
	out := make([]Record, 0, len(entries))
	for _, e := range entries {
		if !strings.HasPrefix(e.Key, prefix) {
			continue
		}
		r, err := s.accept(e.Key, e.Value)
		if errors.Is(err, ErrUnverified) {
			continue // counted; logged by the verifier once per record
		}
		if err != nil {
			s.log.Warn("skipping undecodable record", "key", e.Key, "err", err)
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// queryPrefix turns a string prefix into the path prefix go-datastore
// matches (whole path segments): "/services/we" is queried as "/services"
// and filtered afterwards.
func queryPrefix(prefix string) string {
	i := strings.LastIndex(prefix, "/")
	if i <= 0 {
		return "/"
	}
	return prefix[:i]
}
