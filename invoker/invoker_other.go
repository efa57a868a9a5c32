//go:build !linux

package invoker

import (
	"context"
	"errors"
)

var errUnsupported = errors.New("invoker: sandboxes need Linux")

var _ Service = (*Invoker)(nil)

// Invoker runs deployed functions; it needs Linux.
type Invoker struct{}

// New fails: the invoker needs Linux.
func New(ctx context.Context, opts ...Option) (*Invoker, error) { return nil, errUnsupported }

func (iv *Invoker) Registry() *Registry                { return nil }
func (iv *Invoker) Close(ctx context.Context) error    { return nil }
func (iv *Invoker) Functions() []*Function             { return nil }
func (iv *Invoker) Function(string) (*Function, error) { return nil, errUnsupported }
func (iv *Invoker) Status() Status                     { return Status{} }
func (iv *Invoker) Remove(context.Context, string) error {
	return errUnsupported
}
func (iv *Invoker) Deploy(context.Context, string, Source) (*Function, error) {
	return nil, errUnsupported
}
func (iv *Invoker) Invoke(context.Context, string, []byte, InvokeOptions) (*Result, error) {
	return nil, errUnsupported
}
func (iv *Invoker) InvokeAsync(context.Context, string, []byte, InvokeOptions) (string, error) {
	return "", errUnsupported
}
func (iv *Invoker) AsyncResult(string) (*Result, bool, error) { return nil, false, errUnsupported }
func (iv *Invoker) Logs(string, int) ([]byte, error)          { return nil, errUnsupported }
func (iv *Invoker) DeadLetters() []DeadLetter                 { return nil }
