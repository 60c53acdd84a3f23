package crdt

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"syscall"
)

// Size is what a replica occupies.
type Size struct {
	DiskBytes int64 // bytes allocated on disk under Dir (not apparent size: badger preallocates sparse files)
	Blocks    int   // DAG blocks in the blockstore
	Keys      int   // live keys
}

// Size measures the replica; it walks the blockstore, so it is for tests,
// benchmarks and the debug view, not hot paths.
func (s *Store) Size(ctx context.Context) (Size, error) {
	var out Size
	if err := s.Sync(ctx); err != nil {
		return out, err
	}
	err := filepath.WalkDir(s.cfg.Dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			out.DiskBytes += int64(st.Blocks) * 512
		} else {
			out.DiskBytes += info.Size()
		}
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("measure %s: %w", s.cfg.Dir, err)
	}
	ch, err := s.bs.AllKeysChan(ctx)
	if err != nil {
		return out, fmt.Errorf("list blocks in %s: %w", s.cfg.Dir, err)
	}
	for range ch {
		out.Blocks++
	}
	all, err := s.queryRaw(ctx, "/")
	if err != nil {
		return out, err
	}
	out.Keys = len(all)
	return out, nil
}
