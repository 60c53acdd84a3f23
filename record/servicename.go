package record

import (
	"fmt"
	"strings"
)

// Services belong to projects (a Compose project, deploy -p). A service's
// ID, the name its record, containers, history and DNS use, is
// "<name>.<project>"; a service of the default project keeps its bare
// name. That is how services made before projects existed (bare IDs)
// belong to the default project without being touched, and how two
// projects each have a "db" side by side.

// DefaultProject is the project of services that name none
// (`uncloud run`, and everything made before projects).
const DefaultProject = "default"

// ReservedProjects cannot be used as project names: "machine" would put
// services under machine.internal, where machines' names live.
var reservedProjects = map[string]bool{"machine": true, "nearest": true}

// ServiceID is the ID of the service name in project (empty: the
// default project).
func ServiceID(name, project string) string {
	if project == "" || project == DefaultProject {
		return name
	}
	return name + "." + project
}

// SplitServiceID is ServiceID backwards: a bare ID is in the default
// project.
func SplitServiceID(id string) (name, project string) {
	if n, p, ok := strings.Cut(id, "."); ok {
		return n, p
	}
	return id, DefaultProject
}

// ServiceProject is the project of the service id.
func ServiceProject(id string) string {
	_, p := SplitServiceID(id)
	return p
}

// CheckServiceName checks a service's name within its project: a DNS
// label, so it can be the first label of <name>.<project>.internal, with
// '_' inside as Compose's service names have it (plausible_db, which the
// file's other services call by that name). It starts and ends with a
// letter or digit, so it is never taken for an SRV _port or _proto label.
func CheckServiceName(name string) error {
	if !isLabel(name, "-_") || name[0] == '_' || name[len(name)-1] == '_' {
		return fmt.Errorf("service name %q must be a DNS label: 1-63 lowercase letters, digits, '-' or '_', starting and ending with a letter or digit", name)
	}
	return nil
}

// CheckProjectName checks a project's name: a DNS label too, and not a
// reserved one.
func CheckProjectName(project string) error {
	if !isLabel(project, "-") {
		return fmt.Errorf("project name %q must be a DNS label: 1-63 lowercase letters, digits or '-', not starting or ending with '-' (set one with -p)", project)
	}
	if reservedProjects[project] {
		return fmt.Errorf("project name %q is reserved (it would clash with %s.internal): choose another with -p", project, project)
	}
	return nil
}

// CheckServiceID checks an ID as ServiceID makes them.
func CheckServiceID(id string) error {
	name, project := SplitServiceID(id)
	if err := CheckServiceName(name); err != nil {
		return err
	}
	if strings.Contains(id, ".") {
		if project == DefaultProject {
			return fmt.Errorf("service %q: the default project's services have no project suffix (%s)", id, name)
		}
		return CheckProjectName(project)
	}
	return nil
}

// ContainerPrefix is what a service's container names start with, before
// a random suffix: the name, after the project when there is one
// ("blog-db-x7k2"), as Docker Compose names them, so the container name
// stays a DNS label (<container>.<machine>.machine.internal).
func ContainerPrefix(id string) string {
	name, project := SplitServiceID(id)
	if project == DefaultProject {
		return name
	}
	if p := project + "-" + name; len(p) <= 50 {
		return p
	}
	return name
}

// isLabel: lowercase letters, digits and the bytes of extra, 1 to 63,
// not starting or ending with '-'.
func isLabel(s, extra string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte(extra, c) >= 0) {
			return false
		}
	}
	return true
}
