package proxy

import (
	"net/http"
	"net/textproto"
	"strings"
)

// TokenHeader carries the operator's shared token (kubetune.api.routerconfig.TOKEN_HEADER).
const TokenHeader = "X-Kubetune-Token"

// ServedByHeader names the variant that answered (kubetune.api.routerconfig.VARIANT_RESPONSE_HEADER).
const ServedByHeader = "X-Kubetune-Served-By"

// Hop-by-hop headers (RFC 9110 7.6.1), plus those each leg sets for itself.
var requestDrop = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Host": true, "Content-Length": true,
	// The router has read the whole body already: the upstream must not make it wait for a 100.
	"Expect": true,
	// The operator's token authenticates to this router only.
	TokenHeader: true,
}

var responseDrop = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Content-Length": true, "Date": true, "Server": true,
}

// connectionListed returns the headers named in Connection (canonical form); they are hop-by-hop too.
func connectionListed(h http.Header) map[string]bool {
	values := h["Connection"]
	if len(values) == 0 {
		return nil
	}
	out := map[string]bool{}
	for _, v := range values {
		for _, name := range strings.Split(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				out[textproto.CanonicalMIMEHeaderKey(name)] = true
			}
		}
	}
	return out
}

func copyHeaders(dst, src http.Header, drop map[string]bool) {
	listed := connectionListed(src)
	for k, vs := range src {
		if drop[k] || listed[k] {
			continue
		}
		dst[k] = vs
	}
}
