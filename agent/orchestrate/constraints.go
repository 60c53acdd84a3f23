package orchestrate

import (
	"fmt"
	"slices"
	"strings"

	"github.com/uncloud-mesh/uncloud/api"
)

// Placement constraints, in Swarm's deploy.placement.constraints form:
//
//	node.hostname==m1   node.id!=…   node.role==ingress
//	node.labels.disk==ssd   node.platform.arch==arm64   node.platform.os==linux
//
// with == or !=. node.role matches any of the machine's roles ("ingress"),
// so node.role!=ingress keeps machines without it; a label the machine
// lacks is "" (so node.labels.gpu!=yes holds on a machine without it).

// constraint is one parsed placement constraint.
type constraint struct {
	field string // hostname, id, role, arch, os, or labels.KEY
	value string
	equal bool
}

// parseConstraints parses every constraint; the error names the one that
// is wrong and says the form.
func parseConstraints(in []string) ([]constraint, error) {
	var out []constraint
	for _, s := range in {
		c, err := parseConstraint(s)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

func parseConstraint(s string) (constraint, error) {
	var c constraint
	op := "=="
	left, right, ok := strings.Cut(s, "==")
	c.equal = true
	if l, r, neq := strings.Cut(s, "!="); neq && (!ok || len(l) < len(left)) {
		left, right, ok, op, c.equal = l, r, true, "!=", false
	}
	if !ok {
		return c, fmt.Errorf("%w: constraint %q: use == or !=, e.g. node.labels.disk==ssd", api.ErrBadRequest, s)
	}
	left, right = strings.TrimSpace(left), strings.TrimSpace(right)
	if strings.ContainsAny(right, "=!") || right == "" {
		return c, fmt.Errorf("%w: constraint %q: value after %s is missing or malformed", api.ErrBadRequest, s, op)
	}
	c.value = right
	switch {
	case left == "node.hostname", left == "node.name":
		c.field = "hostname"
	case left == "node.id":
		c.field = "id"
	case left == "node.role":
		c.field = "role"
	case left == "node.platform.arch":
		c.field = "arch"
	case left == "node.platform.os":
		c.field = "os"
	case strings.HasPrefix(left, "node.labels.") && len(left) > len("node.labels."):
		c.field = "labels." + strings.TrimPrefix(left, "node.labels.")
	default:
		return c, fmt.Errorf("%w: constraint %q: %q is not node.hostname, node.id, node.role, node.labels.KEY, node.platform.arch or node.platform.os",
			api.ErrBadRequest, s, left)
	}
	return c, nil
}

func (c constraint) String() string {
	op := "=="
	if !c.equal {
		op = "!="
	}
	f := "node." + c.field
	switch c.field {
	case "arch", "os":
		f = "node.platform." + c.field
	}
	return f + op + c.value
}

// needsArch says whether any constraint reads the machine's architecture
// (which only the machine's Docker can tell).
func needsArch(cs []constraint) bool {
	return slices.ContainsFunc(cs, func(c constraint) bool { return c.field == "arch" })
}

// normalizeArch turns Docker's and uname's names into Go's (what images
// are published for): x86_64 → amd64, aarch64 → arm64, armv7l → arm.
func normalizeArch(a string) string {
	switch strings.ToLower(a) {
	case "x86_64", "x86-64", "amd64":
		return "amd64"
	case "aarch64", "arm64":
		return "arm64"
	case "armv7l", "armv7", "armhf", "arm":
		return "arm"
	case "i386", "i686", "386":
		return "386"
	}
	return strings.ToLower(a)
}

// holds says whether a machine meets the constraint.
func (c constraint) holds(m candidate) bool {
	var match bool
	switch {
	case c.field == "hostname":
		match = m.Name == c.value
	case c.field == "id":
		match = m.ID == c.value
	case c.field == "role":
		match = slices.Contains(m.Roles, c.value)
	case c.field == "arch":
		match = m.capacity.Arch != "" && normalizeArch(m.capacity.Arch) == normalizeArch(c.value)
	case c.field == "os":
		match = c.value == "linux"
	default:
		match = m.Labels[strings.TrimPrefix(c.field, "labels.")] == c.value
	}
	return match == c.equal
}
