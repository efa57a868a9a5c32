//go:build linux && !amd64

package sbinit

// helper is nil: no sockfaas-init is embedded for this architecture yet
// (build.sh arm64 builds one; embed it like blob_amd64.go does).
var helper []byte
