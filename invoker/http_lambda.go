package invoker

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// AWS Lambda's Invoke API (POST /2015-03-31/functions/{name}/invocations)
// and OpenLambda's POST /run/{name}.

// Headers of Lambda's Invoke API. AWS writes the first two
// x-amzn-RequestId and x-amzn-ErrorType; header names are
// case-insensitive, and every SDK reads them so.
const (
	amznRequestID      = "X-Amzn-Requestid"
	amznErrorType      = "X-Amzn-Errortype"
	amzInvocationType  = "X-Amz-Invocation-Type"
	amzLogType         = "X-Amz-Log-Type"
	amzFunctionError   = "X-Amz-Function-Error"
	amzExecutedVersion = "X-Amz-Executed-Version"
	amzLogResult       = "X-Amz-Log-Result"
)

// lambdaLogTail is how much of the log X-Amz-Log-Type: Tail returns, as
// Lambda does.
const lambdaLogTail = 4 << 10

// invokeLambda serves the three invocation types. Only the newest version
// of a function is served: a Qualifier other than $LATEST or its number is
// ResourceNotFoundException.
func (h *httpHandler) invokeLambda(w *httpRecorder, r *http.Request) error {
	name, qualifier, err := parseLambdaName(r.PathValue("name"), r.URL.Query().Get("Qualifier"))
	if err != nil {
		return err
	}
	w.fn = name
	invocationType := r.Header.Get(amzInvocationType)
	switch invocationType {
	case "":
		invocationType = "RequestResponse"
	case "RequestResponse", "Event", "DryRun":
	default:
		return fmt.Errorf("%w: %s %q: want RequestResponse, Event or DryRun", errBadContent, amzInvocationType, invocationType)
	}
	tail := false
	switch lt := r.Header.Get(amzLogType); lt {
	case "", "None":
	case "Tail":
		tail = true
	default:
		return fmt.Errorf("%w: %s %q: want None or Tail", errBadContent, amzLogType, lt)
	}

	fn, err := h.svc.Function(name)
	if err != nil {
		return err
	}
	if qualifier != "" && qualifier != "$LATEST" && qualifier != strconv.Itoa(fn.Version) {
		return fmt.Errorf("%w: %s:%s (only $LATEST and the newest version, %d, are served)", ErrNotFound, name, qualifier, fn.Version)
	}

	opts := InvokeOptions{RequestID: w.reqID}
	switch invocationType {
	case "DryRun":
		w.WriteHeader(http.StatusNoContent)
		return nil
	case "Event":
		payload, err := readEvent(w, r, maxAsyncPayload)
		if err != nil {
			return err
		}
		if _, err := h.invokeAsync(r, name, payload, opts); err != nil {
			return err
		}
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusAccepted)
		return nil
	}

	payload, err := readEvent(w, r, maxSyncPayload)
	if err != nil {
		return err
	}
	res, err := h.invoke(r, name, payload, opts)
	if err != nil {
		errorType := describeError(err, r.Context().Err() != nil).lambdaFunctionError
		if errorType == "" {
			return err
		}
		h.log.Debug().Err(err).Str("func", name).Str("request_id", w.reqID).Msg("invocation failed")
		res = lambdaFunctionError(errorType, w.reqID, fn)
	}
	if res.RequestID != "" {
		w.reqID = res.RequestID
		w.Header().Set(amznRequestID, res.RequestID)
	}
	if res.Start != "" {
		w.Header().Set(headerStart, res.Start)
		w.Header().Set(headerDuration, durationMs(res))
	}
	w.Header().Set(amzExecutedVersion, strconv.Itoa(fn.Version))
	if res.FunctionError {
		w.Header().Set(amzFunctionError, "Unhandled")
	}
	if tail {
		// The function's log, not this call's alone: instances share it.
		if out, err := h.svc.Logs(name, lambdaLogTail); err == nil {
			w.Header().Set(amzLogResult, base64.StdEncoding.EncodeToString(out))
		}
	}
	writeBody(w, http.StatusOK, "application/json", res.Payload)
	return nil
}

// lambdaFunctionError is the function error Lambda answers for a timeout
// (Sandbox.Timedout) or a runtime that exited (Runtime.ExitError).
func lambdaFunctionError(errorType, reqID string, fn *Function) *Result {
	msg := "Runtime exited without providing a reason"
	if errorType == "Sandbox.Timedout" {
		msg = fmt.Sprintf("Task timed out after %.2f seconds", fn.Manifest.Timeout().Seconds())
	}
	payload, _ := json.Marshal(struct {
		ErrorType    string `json:"errorType"`
		ErrorMessage string `json:"errorMessage"`
	}{errorType, "RequestId: " + reqID + " Error: " + msg})
	return &Result{RequestID: reqID, Payload: payload, FunctionError: true}
}

// parseLambdaName accepts Lambda's forms of a function name: "name",
// "name:qualifier", the ARN "arn:aws:lambda:region:account:function:name"
// and the partial ARN "account:function:name", each with an optional
// ":qualifier". A qualifier in both the name and the query must agree.
func parseLambdaName(s, queryQualifier string) (name, qualifier string, err error) {
	parts := strings.Split(s, ":")
	switch {
	case len(parts) >= 7 && len(parts) <= 8 && parts[0] == "arn" && parts[5] == "function":
		parts = parts[6:]
	case len(parts) >= 3 && len(parts) <= 4 && parts[1] == "function":
		parts = parts[2:]
	case len(parts) > 2:
		return "", "", fmt.Errorf("%w: function name %q: want a name, name:qualifier or a function ARN", ErrInvalid, s)
	}
	name = parts[0]
	if len(parts) == 2 {
		qualifier = parts[1]
	}
	switch {
	case qualifier == "":
		qualifier = queryQualifier
	case queryQualifier != "" && queryQualifier != qualifier:
		return "", "", fmt.Errorf("%w: the qualifier in the function name (%s) differs from the Qualifier parameter (%s)", ErrInvalid, qualifier, queryQualifier)
	}
	if err := ValidateName(name); err != nil {
		return "", "", err
	}
	return name, qualifier, nil
}

// runOpenLambda is OpenLambda's POST /run/{name}: the handler's result
// with 200, or its error with 500.
func (h *httpHandler) runOpenLambda(w *httpRecorder, r *http.Request) error {
	name := r.PathValue("name")
	payload, err := readEvent(w, r, maxSyncPayload)
	if err != nil {
		return err
	}
	res, err := h.invoke(r, name, payload, InvokeOptions{RequestID: w.reqID})
	if err != nil {
		return err
	}
	status := http.StatusOK
	if res.FunctionError {
		status = http.StatusInternalServerError
	}
	writeResult(w, res, status)
	return nil
}
