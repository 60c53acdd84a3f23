package membership

import (
	"fmt"
	"maps"
	"strings"
)

// Machine labels: key=value pairs a machine publishes in its own record,
// for placement constraints (node.labels.KEY==VALUE). Like roles, only the
// machine writes them, so a change for another machine is a call to it.

// maxLabels bounds what one record carries; labels are for placement,
// not for data.
const maxLabels = 64

// checkLabels accepts keys of letters, digits, '.', '-', '_' and '/'
// (so Docker-style reverse-DNS keys work) and values without spaces.
func checkLabels(set map[string]string, remove []string) error {
	if len(set) > maxLabels {
		return fmt.Errorf("%d labels: at most %d", len(set), maxLabels)
	}
	for k, v := range set {
		if err := checkLabelKey(k); err != nil {
			return err
		}
		if len(v) > 256 || strings.ContainsAny(v, " \t\n=") {
			return fmt.Errorf("label %s: value %q must be at most 256 characters without spaces or '='", k, v)
		}
	}
	for _, k := range remove {
		if err := checkLabelKey(k); err != nil {
			return err
		}
	}
	return nil
}

func checkLabelKey(k string) error {
	if k == "" || len(k) > 128 {
		return fmt.Errorf("label key %q: 1-128 characters", k)
	}
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune(".-_/", c)) {
			return fmt.Errorf("label key %q: %q is not allowed (letters, digits, '.', '-', '_', '/')", k, c)
		}
	}
	return nil
}

// changeLabels is labels with set applied and remove taken away; nil
// when none are left.
func changeLabels(labels, set map[string]string, remove []string) map[string]string {
	out := maps.Clone(labels)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, set)
	for _, k := range remove {
		delete(out, k)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
