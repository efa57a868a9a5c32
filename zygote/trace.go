package zygote

import (
	"encoding/json"
	"fmt"
)

// traceMark is one checkpoint: a name and CLOCK_MONOTONIC nanoseconds.
type traceMark struct {
	Name string
	NS   int64
}

// UnmarshalJSON reads the ["name", ns] pairs the fork server sends.
func (m *traceMark) UnmarshalJSON(b []byte) error {
	var pair []json.RawMessage
	if err := json.Unmarshal(b, &pair); err != nil {
		return err
	}
	if len(pair) != 2 {
		return fmt.Errorf("trace mark: want [name, ns], got %s", b)
	}
	if err := json.Unmarshal(pair[0], &m.Name); err != nil {
		return err
	}
	return json.Unmarshal(pair[1], &m.NS)
}
