// A pod-side probe for the real-node tests: it reports what a workload of ours sees from inside a
// container (its uid, the cluster's DNS, the API server through the `kubernetes` Service with its
// projected service-account token, a writable volume), over HTTP on :8080. For the NetworkPolicy
// tests it also listens on the extra ports of $PROBE_LISTEN (comma-separated) and reports whether it
// can open a TCP connection to another address (/connect?addr=host:port).
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const serviceAccount = "/var/run/secrets/kubernetes.io/serviceaccount"

func apiVersion() (string, error) {
	token, err := os.ReadFile(filepath.Join(serviceAccount, "token"))
	if err != nil {
		return "", err
	}
	ca, err := os.ReadFile(filepath.Join(serviceAccount, "ca.crt"))
	if err != nil {
		return "", err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	req, err := http.NewRequest(http.MethodGet, "https://kubernetes.default.svc/version", nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+string(token))
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d %s", resp.StatusCode, body), nil
}

func report(w http.ResponseWriter, r *http.Request) {
	out := map[string]any{"uid": os.Getuid(), "gid": os.Getgid()}
	if name := r.URL.Query().Get("resolve"); name != "" {
		addrs, err := net.LookupHost(name)
		out["resolved"], out["resolveError"] = addrs, fmt.Sprint(err)
	}
	version, err := apiVersion()
	out["apiVersion"], out["apiError"] = version, fmt.Sprint(err)
	if dir := os.Getenv("PROBE_VOLUME"); dir != "" {
		path := filepath.Join(dir, "written-by-"+os.Getenv("HOSTNAME"))
		out["volumeError"] = fmt.Sprint(os.WriteFile(path, []byte("ok\n"), 0o644))
	}
	_, rootErr := os.Create("/probe-root-write")
	out["rootWritable"] = rootErr == nil
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

func connect(w http.ResponseWriter, r *http.Request) {
	conn, err := net.DialTimeout("tcp", r.URL.Query().Get("addr"), 3*time.Second)
	out := map[string]any{"connected": err == nil, "error": fmt.Sprint(err)}
	if conn != nil {
		_ = conn.Close()
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

func main() {
	http.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	http.HandleFunc("/report", report)
	http.HandleFunc("/connect", connect)
	for _, port := range strings.Split(os.Getenv("PROBE_LISTEN"), ",") {
		if port == "" {
			continue
		}
		extra := &http.Server{Addr: ":" + port, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := extra.ListenAndServe(); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
		}()
	}
	server := &http.Server{Addr: ":8080", ReadHeaderTimeout: 5 * time.Second}
	if err := server.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
