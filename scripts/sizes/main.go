// Command sizes says what takes the space in a Go binary: the size of
// its symbols grouped by the module they come from, the standard library
// counted as "std". Usage:
//
//	go run ./scripts/sizes [-n 25] BINARY
//
// BINARY must keep its symbol table (built without -ldflags -s); code
// and data are laid out the same with or without it, so the breakdown of
// an unstripped build holds for the stripped release binary too.
//
// It reads the ELF symbol table (what `go tool nm -size` prints) and the
// module list the Go linker embeds (what `go version -m` prints), so it
// needs neither the source nor the network. Symbols whose package is not
// a module's (compiler-generated strings, type links) and the tables that
// are not symbols (.gopclntab's line tables, the symbol table itself) are
// shown on their own lines, so the columns add up to the file size.
package main

import (
	"cmp"
	"debug/buildinfo"
	"debug/elf"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
)

func main() {
	top := flag.Int("n", 25, "modules to list; the rest are summed on one line")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: go run ./scripts/sizes [-n 25] BINARY")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *top); err != nil {
		fmt.Fprintf(os.Stderr, "sizes: %v\n", err)
		os.Exit(1)
	}
}

func run(path string, top int) error {
	info, err := buildinfo.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read build info of %s: %w", path, err)
	}
	modules := []string{info.Main.Path}
	for _, d := range info.Deps {
		modules = append(modules, d.Path)
	}
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		return fmt.Errorf("symbols of %s (built with -ldflags -s? use an unstripped build): %w", path, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}

	type sizes struct{ code, data uint64 }
	by := map[string]*sizes{}
	var code, data, bss uint64
	for _, s := range syms {
		if s.Size == 0 || s.Section == elf.SHN_UNDEF || int(s.Section) >= len(f.Sections) {
			continue
		}
		sec := f.Sections[s.Section]
		if sec.Type == elf.SHT_NOBITS {
			// .bss and .noptrbss take memory when touched, not file bytes.
			bss += s.Size
			continue
		}
		m := moduleOf(packageOf(s.Name), modules)
		if by[m] == nil {
			by[m] = &sizes{}
		}
		if sec.Flags&elf.SHF_EXECINSTR != 0 {
			by[m].code += s.Size
			code += s.Size
		} else {
			by[m].data += s.Size
			data += s.Size
		}
	}
	// .gopclntab (function names, pc-line and stack maps) is not in the
	// symbols' sizes; it grows with the code, so each module is given a
	// share in proportion to its code.
	var pcln, debug uint64
	for _, sec := range f.Sections {
		switch {
		case sec.Name == ".gopclntab":
			pcln = sec.Size
		case strings.HasPrefix(sec.Name, ".debug") || strings.HasPrefix(sec.Name, ".zdebug") ||
			sec.Name == ".symtab" || sec.Name == ".strtab":
			debug += sec.FileSize // DWARF is compressed in the file
		}
	}
	share := func(s *sizes) uint64 {
		if code == 0 {
			return s.data
		}
		return s.code + s.data + uint64(float64(pcln)*float64(s.code)/float64(code))
	}

	type row struct {
		name string
		s    *sizes
		all  uint64
	}
	var rows []row
	for m, s := range by {
		rows = append(rows, row{m, s, share(s)})
	}
	slices.SortFunc(rows, func(a, b row) int { return cmp.Or(cmp.Compare(b.all, a.all), strings.Compare(a.name, b.name)) })

	total := uint64(st.Size())
	w := tabwriter.NewWriter(os.Stdout, 0, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "KiB\tshare\tcode\tdata\t module (%s, %s)\n", path, info.GoVersion)
	line := func(name string, all, code, data uint64) {
		fmt.Fprintf(w, "%s\t%.1f%%\t%s\t%s\t %s\n", kb(all), 100*float64(all)/float64(total), kb(code), kb(data), name)
	}
	var rest sizes
	var restAll uint64
	for i, r := range rows {
		if i < top {
			line(r.name, r.all, r.s.code, r.s.data)
			continue
		}
		rest.code += r.s.code
		rest.data += r.s.data
		restAll += r.all
	}
	if len(rows) > top {
		line(fmt.Sprintf("(%d more)", len(rows)-top), restAll, rest.code, rest.data)
	}
	accounted := code + data + pcln + debug
	other := uint64(0)
	if total > accounted {
		other = total - accounted
	}
	fmt.Fprintf(w, "%s\t%.1f%%\t\t\t %s\n", kb(debug), 100*float64(debug)/float64(total), "DWARF and symbol tables (gone with -ldflags \"-s -w\")")
	fmt.Fprintf(w, "%s\t%.1f%%\t\t\t %s\n", kb(other), 100*float64(other)/float64(total), "bytes no symbol covers: headers, section padding, read-only data between symbols")
	fmt.Fprintf(w, "%s\t\t\t\t %s\n", kb(total), "file")
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Printf("\nKiB: code + data + the module's share of .gopclntab (%s KiB). Zeroed data (.bss: in no file, resident once touched): %s KiB.\n", kb(pcln), kb(bss))
	return nil
}

func kb(n uint64) string { return fmt.Sprintf("%d", (n+512)/1024) }

// packageOf extracts the import path from a Go symbol name:
// "github.com/a/b.(*T).M" → "github.com/a/b", "type:*net/http.Client" →
// "net/http", "go:itab.*x/y.T,z.I" → "x/y". Names that belong to no
// package give "".
func packageOf(sym string) string {
	for _, p := range []string{"type:", ".eq.", ".hash.", ".gcmask.", "go:itab.", "go:info.", "go:cuinfo.", "gclocals·"} {
		sym = strings.TrimPrefix(sym, p)
	}
	sym = strings.TrimLeft(sym, "*[]0123456789")  // pointer, slice and array types
	if i := strings.IndexAny(sym, "[,"); i >= 0 { // generic instances, itab pairs
		sym = sym[:i]
	}
	if strings.HasPrefix(sym, "go:") || strings.HasPrefix(sym, "go.") ||
		strings.HasPrefix(sym, "struct {") || strings.HasPrefix(sym, "func(") ||
		strings.HasPrefix(sym, "map[") || strings.HasPrefix(sym, "interface {") { // anonymous types
		return ""
	}
	slash := strings.LastIndexByte(sym, '/')
	dot := strings.IndexByte(sym[slash+1:], '.')
	if dot < 0 {
		return ""
	}
	// The linker escapes dots in a path's last element (yaml%2ev3), so
	// the first dot after the last slash ends the path; unescape after.
	return strings.ReplaceAll(sym[:slash+1+dot], "%2e", ".")
}

// moduleOf maps a package to the longest module path that holds it;
// packages whose first element has no dot are the standard library's.
func moduleOf(pkg string, modules []string) string {
	if pkg == "" {
		return "(compiler-made: strings, anonymous types, type links)"
	}
	if pkg == "main" {
		return modules[0] // the main module's command
	}
	first, _, _ := strings.Cut(pkg, "/")
	if !strings.Contains(first, ".") { // includes vendor/golang.org/x/..., std's own copies
		return "std"
	}
	best := ""
	for _, m := range modules {
		if (pkg == m || strings.HasPrefix(pkg, m+"/")) && len(m) > len(best) {
			best = m
		}
	}
	if best == "" {
		// Vendored into std (golang.org/x/... under vendor/) or a
		// module the build info does not list.
		return pkg
	}
	return best
}
