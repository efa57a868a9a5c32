package invoker

import (
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// The native API, under /v1.

func (h *httpHandler) healthz(w *httpRecorder, r *http.Request) error {
	writeBody(w, http.StatusOK, "text/plain; charset=utf-8", []byte("ok\n"))
	return nil
}

func (h *httpHandler) status(w *httpRecorder, r *http.Request) error {
	writeJSON(w, http.StatusOK, NewStatusInfo(h.svc.Status()))
	return nil
}

// deadLetters serves GET /v1/dead-letters: the asynchronous events that
// failed every attempt, oldest first (payloads included, as JSON).
func (h *httpHandler) deadLetters(w *httpRecorder, r *http.Request) error {
	out := DeadLetterList{DeadLetters: []DeadLetterInfo{}}
	for _, d := range h.svc.DeadLetters() {
		out.DeadLetters = append(out.DeadLetters, NewDeadLetterInfo(d))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// FunctionList is the body of GET /v1/functions.
type FunctionList struct {
	Functions []FunctionInfo `json:"functions"`
}

func (h *httpHandler) listFunctions(w *httpRecorder, r *http.Request) error {
	fns := h.svc.Functions()
	list := FunctionList{Functions: make([]FunctionInfo, 0, len(fns))}
	for _, f := range fns {
		list.Functions = append(list.Functions, NewFunctionInfo(f))
	}
	slices.SortFunc(list.Functions, func(a, b FunctionInfo) int { return strings.Compare(a.Name, b.Name) })
	writeJSON(w, http.StatusOK, list)
	return nil
}

func (h *httpHandler) getFunction(w *httpRecorder, r *http.Request) error {
	fn, err := h.svc.Function(r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, NewFunctionInfo(fn))
	return nil
}

// deploy takes a .tar.gz body and makes it the function's new version.
func (h *httpHandler) deploy(w *httpRecorder, r *http.Request) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		switch {
		case err != nil:
			return errUnsupportedMedia
		case mt == "application/gzip", mt == "application/x-gzip", mt == "application/octet-stream":
		default:
			return errUnsupportedMedia
		}
	}
	if r.ContentLength > h.maxUpload {
		return errTooLargeUpload(r.ContentLength, h.maxUpload)
	}
	// FromArchive stops after maxUpload+1 bytes too; limitBody is there to
	// have the server close the connection rather than drain the rest.
	body := limitBody(w, r, h.maxUpload)
	fn, err := h.svc.Deploy(r.Context(), r.PathValue("name"), FromArchive(body, h.maxUpload))
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/functions/"+url.PathEscape(fn.Name))
	writeJSON(w, http.StatusCreated, NewFunctionInfo(fn))
	return nil
}

func (h *httpHandler) removeFunction(w *httpRecorder, r *http.Request) error {
	name := r.PathValue("name")
	if err := h.svc.Remove(r.Context(), name); err != nil {
		return err
	}
	h.metrics.forget(name)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// logs answers the end of the function's captured output, ?max=N bytes of
// it (default 64 KiB, at most 16 MiB).
func (h *httpHandler) logs(w *httpRecorder, r *http.Request) error {
	limit := defaultLogBytes
	if s := r.URL.Query().Get("max"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return errInvalidf("max %q: want a positive number of bytes", s)
		}
		limit = min(n, maxLogBytes)
	}
	out, err := h.svc.Logs(r.PathValue("name"), limit)
	if err != nil {
		return err
	}
	writeBody(w, http.StatusOK, "text/plain; charset=utf-8", out)
	return nil
}

// AsyncAccepted is the body of an accepted ?async=true invocation.
type AsyncAccepted struct {
	ID string `json:"id"`
}

// AsyncPending is the body of GET /v1/invocations/{id} before the result.
type AsyncPending struct {
	Status string `json:"status"` // "pending"
}

// invokeNative is POST /v1/functions/{name}/invoke: the body is the
// event; a caller's X-Request-Id (letters, digits, "-_.:", up to 128)
// becomes the invocation's request ID.
func (h *httpHandler) invokeNative(w *httpRecorder, r *http.Request) error {
	name := r.PathValue("name")
	async := false
	if s := r.URL.Query().Get("async"); s != "" {
		var err error
		if async, err = strconv.ParseBool(s); err != nil {
			return errInvalidf("async %q: want true or false", s)
		}
	}
	if id := r.Header.Get("X-Request-Id"); validRequestID(id) {
		w.reqID = id
		w.Header().Set("X-Request-Id", id)
	}
	limit := int64(maxSyncPayload)
	if async {
		limit = maxAsyncPayload
	}
	payload, err := readEvent(w, r, limit)
	if err != nil {
		return err
	}
	opts := InvokeOptions{RequestID: w.reqID}
	if async {
		id, err := h.invokeAsync(r, name, payload, opts)
		if err != nil {
			return err
		}
		w.Header().Set("Location", "/v1/invocations/"+url.PathEscape(id))
		writeJSON(w, http.StatusAccepted, AsyncAccepted{ID: id})
		return nil
	}
	res, err := h.invoke(r, name, payload, opts)
	if err != nil {
		return err
	}
	writeResult(w, res, http.StatusOK)
	return nil
}

// invocation is GET /v1/invocations/{id}: the result of an asynchronous
// invocation, answered like a synchronous one, once it is there.
func (h *httpHandler) invocation(w *httpRecorder, r *http.Request) error {
	res, done, err := h.svc.AsyncResult(r.PathValue("id"))
	switch {
	case err != nil:
		return err
	case !done:
		writeJSON(w, http.StatusAccepted, AsyncPending{Status: "pending"})
		return nil
	case res == nil:
		return errNoResult
	}
	writeResult(w, res, http.StatusOK)
	return nil
}

// Headers of the native and OpenLambda APIs' invocation results.
const (
	headerStart         = "X-Sockfaas-Start"
	headerDuration      = "X-Sockfaas-Duration-Ms"
	headerFunctionError = "X-Sockfaas-Function-Error"
)

// writeResult answers a handler's result: its JSON, or Lambda's error
// JSON with X-Sockfaas-Function-Error set.
func writeResult(w *httpRecorder, res *Result, status int) {
	resultHeaders(w, res)
	if res.FunctionError {
		w.Header().Set(headerFunctionError, "Unhandled")
	}
	writeBody(w, status, "application/json", res.Payload)
}

// resultHeaders sets the request ID, where the instance came from and how
// long the call took (in milliseconds, to the microsecond).
func resultHeaders(w *httpRecorder, res *Result) {
	if res.RequestID != "" {
		w.reqID = res.RequestID
		w.Header().Set("X-Request-Id", res.RequestID)
	}
	if res.Start != "" {
		w.Header().Set(headerStart, res.Start)
	}
	w.Header().Set(headerDuration, durationMs(res))
}

// durationMs is X-Sockfaas-Duration-Ms: milliseconds to the microsecond.
func durationMs(res *Result) string {
	return strconv.FormatFloat(float64(res.Duration.Microseconds())/1000, 'f', 3, 64)
}
