package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/uncloud-mesh/uncloud/api"
)

// fileFlags parses `uncloud run --secret` and `--config` values:
//
//	NAME                    a secret stored before, at /run/secrets/NAME
//	NAME=@FILE              its content from FILE (stored sealed first)
//	NAME=@FILE,target=PATH,mode=0400,uid=N,gid=N
//
// Content comes only from a file, never from the command line, where it
// would sit in shell history and in `ps`.
func fileFlags(kind string, values []string) ([]api.FileSpec, []api.SecretContent, error) {
	var files []api.FileSpec
	var contents []api.SecretContent
	for _, v := range values {
		parts := strings.Split(v, ",")
		name, src, hasSrc := strings.Cut(parts[0], "=")
		f := api.FileSpec{Kind: kind, Name: name}
		if hasSrc {
			path, ok := strings.CutPrefix(src, "@")
			if !ok || path == "" {
				return nil, nil, fmt.Errorf("--%s %s: the content comes from a file: NAME=@FILE", kind, name)
			}
			st, err := os.Stat(path)
			if err != nil {
				return nil, nil, fmt.Errorf("--%s %s: %w", kind, name, err)
			}
			if st.Size() > api.MaxSecretBytes {
				return nil, nil, fmt.Errorf("--%s %s: %s is %d bytes, at most %d", kind, name, path, st.Size(), api.MaxSecretBytes)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return nil, nil, fmt.Errorf("--%s %s: %w", kind, name, err)
			}
			contents = append(contents, api.SecretContent{Kind: kind, Name: name, Data: data})
		}
		for _, opt := range parts[1:] {
			k, val, _ := strings.Cut(opt, "=")
			var err error
			switch k {
			case "target":
				f.Target = val
			case "mode":
				var m uint64
				m, err = strconv.ParseUint(val, 8, 32)
				f.Mode = uint32(m)
			case "uid":
				f.UID, err = strconv.Atoi(val)
			case "gid":
				f.GID, err = strconv.Atoi(val)
			default:
				err = fmt.Errorf("unknown option %q (target, mode, uid, gid)", k)
			}
			if err != nil {
				return nil, nil, fmt.Errorf("--%s %s: %s: %w", kind, name, opt, err)
			}
		}
		files = append(files, f)
	}
	return files, contents, nil
}
