package main

// Errors in Compose files name the file and the line. compose-go names
// the key path (services.web.image) and, for schema errors, the file, but
// not the line, and its YAML errors name neither the file nor the right
// line. So each file is parsed here first, and a key path in an error is
// looked up in the files' YAML trees.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// composeFile is one Compose file as YAML nodes, for finding lines.
type composeFile struct {
	path    string       // absolute, as compose-go names it
	docs    []*yaml.Node // its documents
	version bool         // it has a top-level version (obsolete)
}

// composeError is an error at a place in a Compose file.
type composeError struct {
	file string // as the user would write it
	line int
	msg  string
	err  error
}

func (e *composeError) Error() string {
	if e.line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.file, e.line, e.msg)
	}
	return e.file + ": " + e.msg
}

func (e *composeError) Unwrap() error { return e.err }

var yamlLineError = regexp.MustCompile(`^yaml: line (\d+): (?s)(.*)$`)

// readComposeFiles parses each file, so that a YAML error names its file
// and line. The standard input ("-") is left to compose-go.
func readComposeFiles(paths []string) ([]composeFile, error) {
	var files []composeFile
	for _, p := range paths {
		if p == "-" {
			continue
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("compose file: %w", err)
		}
		f := composeFile{path: p}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		for {
			var doc yaml.Node
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				break
			}
			if err == nil {
				var v any
				err = doc.Decode(&v) // what the tree does not say: a key given twice
			}
			if err != nil {
				return nil, yamlError(p, err)
			}
			f.docs = append(f.docs, &doc)
			if _, depth := findKey(&doc, []string{"version"}); depth == 1 {
				f.version = true
			}
		}
		files = append(files, f)
	}
	return files, nil
}

// yamlError names the file and line of a YAML error.
func yamlError(path string, err error) error {
	text := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		text = "yaml: " + te.Errors[0]
	}
	if m := yamlLineError.FindStringSubmatch(text); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &composeError{file: displayPath(path), line: line, msg: m[2], err: err}
	}
	return &composeError{file: displayPath(path), msg: text, err: err}
}

var (
	interpolationError = regexp.MustCompile(`^(?:error while interpolating|invalid interpolation format for) ([^\s:]+)`)
	validationError    = regexp.MustCompile(`^validating (.+?): ([^\s:]+) (.*)$`)
	additionalProperty = regexp.MustCompile(`^Additional property (\S+) is not allowed`)
	keyPathError       = regexp.MustCompile(`^(services\.[^\s:]+)`) // the loader's own, see composeService
)

// explainComposeError adds the file and line to an error of compose-go
// when it names a key path that one of the files holds.
func explainComposeError(err error, files []composeFile) error {
	msg := err.Error()
	var keyPath, inFile string
	if m := interpolationError.FindStringSubmatch(msg); m != nil {
		keyPath = m[1]
	} else if m := validationError.FindStringSubmatch(msg); m != nil {
		inFile, keyPath, msg = m[1], m[2], m[2]+": "+m[3]
		if a := additionalProperty.FindStringSubmatch(m[3]); a != nil {
			keyPath += "." + a[1]
		}
	} else if m := keyPathError.FindStringSubmatch(msg); m != nil {
		keyPath = m[1]
	}
	if keyPath == "" {
		if len(files) == 1 {
			return &composeError{file: displayPath(files[0].path), msg: msg, err: err}
		}
		return err
	}
	// The file the error names first, then each in merge order: the first
	// that holds the whole path, or else the one that holds most of it.
	order := make([]composeFile, 0, len(files))
	for _, f := range files {
		if f.path == inFile {
			order = append([]composeFile{f}, order...)
		} else {
			order = append(order, f)
		}
	}
	parts := strings.Split(keyPath, ".")
	best, bestLine, bestDepth := "", 0, 1 // at least a service or a top-level key below "services"
	for _, f := range order {
		for _, doc := range f.docs {
			line, depth := findKey(doc, parts)
			if depth > bestDepth {
				best, bestLine, bestDepth = f.path, line, depth
			}
		}
		if bestDepth == len(parts) {
			break
		}
	}
	if best == "" {
		if inFile != "" {
			return &composeError{file: displayPath(inFile), msg: msg, err: err}
		}
		return err
	}
	return &composeError{file: displayPath(best), line: bestLine, msg: msg, err: err}
}

// findKey follows a key path (dots; "[]" for the items of a list) in a
// YAML tree, and returns the line of the deepest key found and how many
// parts it matched. A name with dots in it (a service "api.v2") matches
// several parts at once.
func findKey(n *yaml.Node, parts []string) (line, depth int) {
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	for depth < len(parts) {
		for n.Kind == yaml.AliasNode && n.Alias != nil {
			n = n.Alias
		}
		switch {
		case parts[depth] == "[]" && n.Kind == yaml.SequenceNode:
			depth++
			if len(n.Content) == 0 {
				return line, depth
			}
			n = n.Content[0] // which item is not known: the first
			line = n.Line
		case n.Kind == yaml.MappingNode:
			k, v, used := mappingChild(n, parts[depth:])
			if k == nil {
				return line, depth
			}
			line, depth, n = k.Line, depth+used, v
		default:
			return line, depth
		}
	}
	return line, depth
}

func mappingChild(n *yaml.Node, parts []string) (key, value *yaml.Node, used int) {
	for j := len(parts); j >= 1; j-- {
		want := strings.Join(parts[:j], ".")
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == want {
				return n.Content[i], n.Content[i+1], j
			}
		}
	}
	return nil, nil, 0
}

// displayPath shows a file as the user would name it: relative to the
// current directory when it is below it.
func displayPath(p string) string {
	wd, err := os.Getwd()
	if err != nil {
		return p
	}
	if rel, err := filepath.Rel(wd, p); err == nil && !strings.HasPrefix(rel, "..") {
		return rel
	}
	return p
}

func displayPaths(paths []string) []string {
	out := make([]string, len(paths))
	for i, p := range paths {
		out[i] = displayPath(p)
	}
	return out
}
