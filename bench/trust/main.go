// Command trust measures what signed records cost readers: records
// checked per second by trust.Verifier against plain ed25519.Verify (the
// floor) and against decoding alone (what a read cost before signatures),
// and List on a crdt.Store with a Verifier against one without:
//
//	go run ./bench/trust [-quick] [-rounds 5]
//
// It prints a table and a one-line summary of ratios, all from one run.
package main

import (
	"context"
	"crypto/ed25519"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/uncloud-mesh/uncloud/crdt"
)

var quietLog = slog.New(slog.DiscardHandler)

const members = 20

func main() {
	quick := flag.Bool("quick", false, "2,000 records, 3 rounds (a smoke run)")
	rounds := flag.Int("rounds", 5, "interleaved rounds; each figure is the median")
	records := flag.Int("records", 10_000, "records in the mix and in each store")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench/trust:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	if *quick {
		*records, *rounds = 2_000, 3
	}
	if err := run(context.Background(), *records, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "bench/trust:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

// row is one line of the table; perRecord is the median time per record.
type row struct {
	figure, method string
	perRecord      time.Duration
}

func run(ctx context.Context, n, rounds int) error {
	start := time.Now()
	w, err := newWorld(members)
	if err != nil {
		return err
	}
	samples, kinds, err := w.mix(n)
	if err != nil {
		return err
	}
	unsigned, err := unsignedForms(samples)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "mix of %d records: %d container, %d service, %d machine; %d members; %d rounds\n",
		n, kinds["container"], kinds["service"], kinds["machine"], members, rounds)

	var floor, decode, decodeUnsigned, cold, warm []time.Duration
	for r := range rounds {
		fmt.Fprintf(os.Stderr, "round %d/%d: checks\n", r+1, rounds)
		floor = append(floor, perRecord(n, func() error { return verifyAll(samples) }))
		decode = append(decode, perRecord(n, func() error { return decodeAll(samples) }))
		decodeUnsigned = append(decodeUnsigned, perRecord(n, func() error { return decodeAll(unsigned) }))
		v, err := w.verifier() // a fresh signature cache: every check verifies
		if err != nil {
			return err
		}
		check := func() error {
			for i := range samples {
				if err := v.Check(samples[i].signed); err != nil {
					return fmt.Errorf("check %s: %w", samples[i].key, err)
				}
			}
			return nil
		}
		cold = append(cold, perRecord(n, check))
		warm = append(warm, perRecord(n, check))
		if err := firstErr(floor, decode, decodeUnsigned, cold, warm); err != nil {
			return err
		}
	}

	fmt.Fprintf(os.Stderr, "stores: writing %d container records into each of 3 stores\n", n)
	ls, err := newListStores(ctx, w, n)
	if err != nil {
		return err
	}
	defer ls.close()
	lists, err := ls.measure(ctx, rounds)
	if err != nil {
		return err
	}

	rows := []row{
		{"ed25519.Verify (floor)", fmt.Sprintf("the record's signature over its signed message, %d members' keys", members), median(floor)},
		{"decode, unsigned form", "crdt.DecodeSigned of the envelope without by/sig: a read before signatures", median(decodeUnsigned)},
		{"decode, signed form", "crdt.DecodeSigned of the stored, signed envelope, no check", median(decode)},
		{"Verifier.Check, cold", "fresh Verifier: every signature new, one ed25519 verify each", median(cold)},
		{"Verifier.Check, warm", "same records again: signature cache hit (sha256 of key, message, signature)", median(warm)},
		{"List, no Verifier, unsigned records", fmt.Sprintf("Store.List of %d containers, as before signatures (median of %d)", n, 3*rounds), median(lists.unsigned)},
		{"List, no Verifier, signed records", "same, signed envelopes (decode cost of by/sig alone)", median(lists.signedNoCheck)},
		{"List, with Verifier, signed records", "same, every record re-checked (warm cache)", median(lists.verified)},
	}
	opens := []row{
		{"Open, no Verifier, signed records", fmt.Sprintf("crdt.Open of a store holding %d records (loads the watch mirror)", n), lists.openPlain},
		{"Open, with Verifier, signed records", "same with a fresh Verifier (a restart): every record verified once", lists.openVerified},
	}
	fmt.Printf("bench/trust: %d records (%d container, %d service, %d machine), %d members, median of %d rounds, GOMAXPROCS %d, %s/%s\n\n",
		n, kinds["container"], kinds["service"], kinds["machine"], members, rounds, runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tper record\trecords/s\tmethod")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.figure, nsOrUs(r.perRecord), rate(r.perRecord), r.method)
	}
	for _, r := range opens {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.figure, nsOrUs(r.perRecord/time.Duration(n)), "("+ms(r.perRecord)+" in all)", r.method)
	}
	tw.Flush()
	f, d, du, c, wm := median(floor), median(decode), median(decodeUnsigned), median(cold), median(warm)
	lu, lv := median(lists.unsigned), median(lists.verified)
	fmt.Printf("\nsummary: Check cold %s/s = %.2f× the ed25519.Verify floor's time (%s/s); warm %s/s (%.0f× cold); "+
		"a read (decode+check) costs %.1f× a pre-signature decode cold, %.2f× warm; List of %d with Verifier %.2f× an unsigned store's without (+%s per record); "+
		"Open after a restart %.1f× (+%s for %d records)\n",
		rate(c), ratio(c, f), rate(f), rate(wm), ratio(c, wm),
		ratio(d+c, du), ratio(d+wm, du), n, ratio(lv, lu), nsOrUs(lv-lu),
		ratio(lists.openVerified, lists.openPlain), ms(lists.openVerified-lists.openPlain), n)
	fmt.Fprintf(os.Stderr, "took %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}

// errSentinel marks a measured run that failed.
const errSentinel = time.Duration(-1)

// perRecord times fn over n records; a failure is returned as errSentinel
// and reported by firstErr (the bench must not print figures of checks
// that failed).
func perRecord(n int, fn func() error) time.Duration {
	runtime.GC()
	start := time.Now()
	if err := fn(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/trust:", err)
		return errSentinel
	}
	return time.Since(start) / time.Duration(n)
}

func firstErr(series ...[]time.Duration) error {
	for _, s := range series {
		if slices.Contains(s, errSentinel) {
			return fmt.Errorf("a measured run failed (see above)")
		}
	}
	return nil
}

func verifyAll(samples []sample) error {
	for i := range samples {
		s := &samples[i]
		if !ed25519.Verify(s.pub, s.signed.Msg, s.signed.Sig) {
			return fmt.Errorf("signature of %s does not verify", s.key)
		}
	}
	return nil
}

func decodeAll(samples []sample) error {
	for i := range samples {
		if _, err := crdt.DecodeSigned(samples[i].key, samples[i].raw); err != nil {
			return err
		}
	}
	return nil
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }

func rate(per time.Duration) string {
	if per <= 0 {
		return "-"
	}
	r := float64(time.Second) / float64(per)
	switch {
	case r >= 1e6:
		return fmt.Sprintf("%.2f M", r/1e6)
	case r >= 1e3:
		return fmt.Sprintf("%.1f k", r/1e3)
	}
	return fmt.Sprintf("%.0f", r)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/1e6) }

func nsOrUs(d time.Duration) string {
	neg := ""
	if d < 0 {
		neg, d = "-", -d
	}
	if d >= 10*time.Microsecond {
		return fmt.Sprintf("%s%.1f µs", neg, float64(d)/1e3)
	}
	return fmt.Sprintf("%s%d ns", neg, d.Nanoseconds())
}
