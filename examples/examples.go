// Package examples holds the example functions that `sockfaas run
// --examples` deploys, embedded so that the binary finds them wherever it
// runs. Each top-level directory is one function, named after it.
package examples

import "embed"

// FS holds hello, numpy and aws-echo, each a function's code.
//
//go:embed hello numpy aws-echo
var FS embed.FS
