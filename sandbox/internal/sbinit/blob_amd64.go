//go:build linux

package sbinit

import _ "embed"

// helper is sockfaas-init for this architecture, built by build.sh.
//
//go:embed init_amd64.bin
var helper []byte
