package oci

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
)

// Blob uploads (POST, PATCH, PUT of /blobs/uploads/) are taken here, not
// by ggcr: ggcr keeps an upload in memory until its PUT, under one lock
// (so a 200 MB layer is 200 MB or more of the agent's heap, and uploads
// wait for each other), and keeps an upload that was never finished until
// the process ends. Here each upload streams to its own temporary file in
// the store, checked and renamed at the PUT like any blob, and whatever is
// unfinished goes with the session. Everything else (HEAD and GET of
// blobs, manifests, monolithic uploads) is ggcr's.

// maxUploads bounds the uploads open at once in one session.
const maxUploads = 64

type upload struct {
	mu sync.Mutex
	w  *Writer
}

// uploads is a session's open uploads, by ID.
type uploads struct {
	mu   sync.Mutex
	open map[string]*upload
}

// abortAll drops every unfinished upload (the session ends).
func (u *uploads) abortAll() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for id, up := range u.open {
		up.mu.Lock()
		up.w.Abort()
		up.mu.Unlock()
		delete(u.open, id)
	}
}

func regError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"errors":[{"code":%q,"message":%q}]}`, code, msg)
}

// serveUpload answers rest (the path after /v2/<repo>/) when it is an
// upload this file takes, and says whether it did.
func (s *Session) serveUpload(w http.ResponseWriter, req *http.Request, rest string) bool {
	id, ok := strings.CutPrefix(rest, "blobs/uploads/")
	if !ok {
		return false
	}
	q := req.URL.Query()
	switch {
	case req.Method == http.MethodPost && id == "" && q.Get("digest") != "":
		return false // monolithic: ggcr streams it into Put
	case req.Method == http.MethodPost && id == "":
		if d := q.Get("mount"); d != "" && s.reg.store.Has(d) {
			// Every repository shares the store: a mount is a yes.
			w.Header().Set("Location", "/v2/"+s.Repo+"/blobs/"+d)
			w.Header().Set("Docker-Content-Digest", d)
			w.WriteHeader(http.StatusCreated)
			return true
		}
		s.startUpload(w)
		return true
	}
	s.ups.mu.Lock()
	up := s.ups.open[id]
	s.ups.mu.Unlock()
	if up == nil {
		regError(w, http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN", "no such upload")
		return true
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	switch req.Method {
	case http.MethodGet:
		s.uploadStatus(w, id, up, http.StatusNoContent)
	case http.MethodPatch:
		if !s.appendUpload(w, req, id, up) {
			return true
		}
		s.uploadStatus(w, id, up, http.StatusAccepted)
	case http.MethodPut:
		if !s.appendUpload(w, req, id, up) {
			return true
		}
		s.forget(id)
		d := q.Get("digest")
		if err := up.w.CommitAs(d); err != nil {
			regError(w, http.StatusBadRequest, "DIGEST_INVALID", err.Error())
			return true
		}
		w.Header().Set("Location", "/v2/"+s.Repo+"/blobs/"+d)
		w.Header().Set("Docker-Content-Digest", d)
		w.WriteHeader(http.StatusCreated)
	case http.MethodDelete:
		s.forget(id)
		up.w.Abort()
		w.WriteHeader(http.StatusNoContent)
	default:
		regError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "method not allowed on an upload")
	}
	return true
}

func (s *Session) startUpload(w http.ResponseWriter) {
	s.ups.mu.Lock()
	defer s.ups.mu.Unlock()
	if len(s.ups.open) >= maxUploads {
		regError(w, http.StatusTooManyRequests, "TOOMANYREQUESTS", fmt.Sprintf("%d uploads open already", maxUploads))
		return
	}
	fw, err := s.reg.store.NewUpload(Pushed, s.reg.maxBlob)
	if err != nil {
		regError(w, http.StatusInternalServerError, "UNKNOWN", err.Error())
		return
	}
	var b [12]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	if s.ups.open == nil {
		s.ups.open = map[string]*upload{}
	}
	up := &upload{w: fw}
	s.ups.open[id] = up
	s.uploadStatus(w, id, up, http.StatusAccepted)
}

func (s *Session) forget(id string) {
	s.ups.mu.Lock()
	delete(s.ups.open, id)
	s.ups.mu.Unlock()
}

func (s *Session) uploadStatus(w http.ResponseWriter, id string, up *upload, status int) {
	w.Header().Set("Location", "/v2/"+s.Repo+"/blobs/uploads/"+id)
	w.Header().Set("Docker-Upload-UUID", id)
	w.Header().Set("Range", fmt.Sprintf("0-%d", max(up.w.Written()-1, 0)))
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(status)
}

// appendUpload writes the request's body to the upload; a chunk that does
// not start where the upload is, or a body that fails, ends the upload.
func (s *Session) appendUpload(w http.ResponseWriter, req *http.Request, id string, up *upload) bool {
	if cr := req.Header.Get("Content-Range"); cr != "" {
		var start, end int64
		if _, err := fmt.Sscanf(cr, "%d-%d", &start, &end); err != nil || start != up.w.Written() {
			regError(w, http.StatusRequestedRangeNotSatisfiable, "BLOB_UPLOAD_INVALID",
				fmt.Sprintf("content range %q does not follow the %d bytes taken", cr, up.w.Written()))
			return false
		}
	}
	if _, err := io.Copy(up.w, req.Body); err != nil {
		s.forget(id)
		up.w.Abort()
		status, code := http.StatusBadRequest, "BLOB_UPLOAD_INVALID"
		var big *http.MaxBytesError
		if errors.As(err, &big) || strings.Contains(err.Error(), "more than the") {
			status, code = http.StatusRequestEntityTooLarge, "SIZE_INVALID"
		}
		regError(w, status, code, err.Error())
		return false
	}
	return true
}
