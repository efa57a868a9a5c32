package invoker

import (
	"encoding/json"
	"time"
)

// The JSON bodies of the native API that carry the invoker's data. They
// are separate from Function and Status so that the wire format is
// stable and says nothing the client has no use for (the code's directory
// on the server, a function's environment).

// FunctionInfo is a function as GET /v1/functions/{name} shows it.
type FunctionInfo struct {
	Name         string    `json:"name"`
	Version      int       `json:"version"`
	Handler      string    `json:"handler"`
	Style        Style     `json:"style"`
	Runtime      string    `json:"runtime"`
	MemoryMB     int       `json:"memory_mb"`
	TimeoutSec   int       `json:"timeout_sec"`
	Requirements []string  `json:"requirements"`
	Imports      []string  `json:"imports"`
	Created      time.Time `json:"created"`
	Digest       string    `json:"digest"`
}

// NewFunctionInfo describes f, its manifest's defaults filled in.
func NewFunctionInfo(f *Function) FunctionInfo {
	m := f.Manifest.WithDefaults()
	return FunctionInfo{
		Name:         f.Name,
		Version:      f.Version,
		Handler:      m.Handler,
		Style:        m.Style,
		Runtime:      m.Runtime,
		MemoryMB:     m.MemoryMB,
		TimeoutSec:   m.TimeoutSec,
		Requirements: nonNil(m.Requirements),
		Imports:      nonNil(f.Imports),
		Created:      f.Created,
		Digest:       f.Digest,
	}
}

// StatusInfo is Status as GET /v1/status shows it.
type StatusInfo struct {
	Functions     int            `json:"functions"`
	Instances     []InstanceInfo `json:"instances"`
	Zygotes       []ZygoteInfo   `json:"zygotes"`
	GenericCached int            `json:"generic_cached"`
	MemoryBytes   uint64         `json:"memory_bytes"`
	Evictions     uint64         `json:"evictions"`
}

// InstanceInfo is InstanceStatus on the wire.
type InstanceInfo struct {
	Function    string    `json:"function"`
	Version     int       `json:"version"`
	ID          string    `json:"id"`
	Pid         int       `json:"pid"`
	State       string    `json:"state"`
	MemoryBytes uint64    `json:"memory_bytes"`
	Started     time.Time `json:"started"`
	Invocations uint64    `json:"invocations"`
}

// ZygoteInfo is ZygoteStatus on the wire.
type ZygoteInfo struct {
	ID          string   `json:"id"`
	Packages    []string `json:"packages"`
	Parent      string   `json:"parent,omitempty"`
	MemoryBytes uint64   `json:"memory_bytes"`
	Forks       uint64   `json:"forks"`
}

// NewStatusInfo converts st (the fields are the same, so a conversion
// breaks at compile time if Status gains or changes one).
func NewStatusInfo(st Status) StatusInfo {
	out := StatusInfo{
		Functions:     st.Functions,
		Instances:     make([]InstanceInfo, len(st.Instances)),
		Zygotes:       make([]ZygoteInfo, len(st.Zygotes)),
		GenericCached: st.GenericCached,
		MemoryBytes:   st.MemoryBytes,
		Evictions:     st.Evictions,
	}
	for i, in := range st.Instances {
		out.Instances[i] = InstanceInfo(in)
	}
	for i, z := range st.Zygotes {
		z.Packages = nonNil(z.Packages)
		out.Zygotes[i] = ZygoteInfo(z)
	}
	return out
}

// nonNil makes a nil slice encode as [] rather than null.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// DeadLetterList is the body of GET /v1/dead-letters, oldest first.
type DeadLetterList struct {
	DeadLetters []DeadLetterInfo `json:"dead_letters"`
}

// DeadLetterInfo is a DeadLetter on the wire; the payload is the event's
// JSON, or a JSON string when the event was not JSON.
type DeadLetterInfo struct {
	ID            string          `json:"id"`
	Function      string          `json:"function"`
	Caller        string          `json:"caller,omitempty"`
	Attempts      int             `json:"attempts"`
	Error         string          `json:"error"`
	FunctionError bool            `json:"function_error"`
	Queued        time.Time       `json:"queued"`
	Payload       json.RawMessage `json:"payload"`
}

// NewDeadLetterInfo describes d.
func NewDeadLetterInfo(d DeadLetter) DeadLetterInfo {
	l := DeadLetterInfo{ID: d.ID, Function: d.Function, Caller: d.Caller, Attempts: d.Attempts,
		Error: d.Error, FunctionError: d.FunctionError, Queued: d.Queued, Payload: d.Payload}
	if !json.Valid(d.Payload) {
		l.Payload, _ = json.Marshal(string(d.Payload))
	}
	return l
}
