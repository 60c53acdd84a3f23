package record

import (
	"fmt"
	"regexp"
	"strings"
)

// AllowFrom is one entry of a service's security group: who may open
// connections to its containers. The text forms (`uncloud run
// --allow-from`, the service record's allow_from):
//
//	web            the containers of service web (also "service:web")
//	machine:m2     the machine m2 itself (its mesh address, x.x.x.1)
//	ingress        every machine with the ingress role
//
// A service with no entry is open to the whole network, as before
// security groups; a service's own containers always reach each other.
type AllowFrom struct {
	Kind AllowKind
	Name string // service or machine name; empty for AllowIngress
}

// AllowKind says what an AllowFrom entry names.
type AllowKind string

// The kinds of AllowFrom entries.
const (
	AllowService AllowKind = "service"
	AllowMachine AllowKind = "machine"
	AllowIngress AllowKind = "ingress"
)

// String is the canonical text: ParseAllowFrom(a.String()) == a.
func (a AllowFrom) String() string {
	switch a.Kind {
	case AllowIngress:
		return "ingress"
	case AllowMachine:
		return "machine:" + a.Name
	}
	return a.Name
}

var allowLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// maxAllowFrom bounds a security group, which every machine compiles.
const maxAllowFrom = 64

// ParseAllowFrom reads one entry; errors say which forms exist.
func ParseAllowFrom(s string) (AllowFrom, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	if t == "ingress" {
		return AllowFrom{Kind: AllowIngress}, nil
	}
	kind, name := AllowService, t
	if k, n, ok := strings.Cut(t, ":"); ok {
		switch k {
		case "service":
			kind = AllowService
		case "machine":
			kind = AllowMachine
		default:
			return AllowFrom{}, fmt.Errorf("allow-from %q: unknown kind %q (use SERVICE, service:NAME, machine:NAME or ingress)", s, k)
		}
		name = n
	}
	valid := allowLabel.MatchString(name)
	if kind == AllowService {
		valid = CheckServiceID(name) == nil // a service of a project: NAME.PROJECT
	}
	if !valid {
		return AllowFrom{}, fmt.Errorf("allow-from %q: %q is not a service or machine name (a DNS label: 1-63 lowercase letters, digits and '-', and NAME.PROJECT for a project's service); use SERVICE, service:NAME, machine:NAME or ingress", s, name)
	}
	return AllowFrom{Kind: kind, Name: name}, nil
}

// ParseAllowFromList parses every entry and returns them in canonical
// text, without duplicates, or the first error.
func ParseAllowFromList(list []string) ([]AllowFrom, []string, error) {
	if len(list) > maxAllowFrom {
		return nil, nil, fmt.Errorf("allow-from has %d entries, more than %d", len(list), maxAllowFrom)
	}
	var out []AllowFrom
	var text []string
	seen := map[AllowFrom]bool{}
	for _, s := range list {
		a, err := ParseAllowFrom(s)
		if err != nil {
			return nil, nil, err
		}
		if seen[a] {
			continue
		}
		seen[a] = true
		out = append(out, a)
		text = append(text, a.String())
	}
	return out, text, nil
}
