// livenessprobe stand-in for the test cluster: the real one is not served by the Go module proxy
// (and no container registry is reachable here). Same command line and contract as upstream:
// GET /healthz on --health-port (or --http-endpoint) answers 200 when the driver's Probe says
// ready, 500 otherwise.
package main

import (
	"context"
	"flag"
	"net"
	"net/http"
	"time"

	"github.com/kubernetes-csi/csi-lib-utils/connection"
	"github.com/kubernetes-csi/csi-lib-utils/rpc"
	"k8s.io/klog/v2"
)

var (
	csiAddress   = flag.String("csi-address", "/run/csi/socket", "the driver's CSI socket")
	healthPort   = flag.String("health-port", "9808", "TCP port of /healthz on every address")
	httpEndpoint = flag.String("http-endpoint", "", "host:port of /healthz (instead of --health-port)")
	probeTimeout = flag.Duration("probe-timeout", time.Second, "timeout of one Probe call")
)

func healthz(w http.ResponseWriter, req *http.Request) {
	ctx, cancel := context.WithTimeout(req.Context(), *probeTimeout)
	defer cancel()
	conn, err := connection.ConnectWithoutMetrics(ctx, *csiAddress, connection.WithTimeout(*probeTimeout))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer func() { _ = conn.Close() }()
	ready, err := rpc.Probe(ctx, conn)
	switch {
	case err != nil:
		http.Error(w, err.Error(), http.StatusInternalServerError)
	case !ready:
		http.Error(w, "driver responded but is not ready", http.StatusInternalServerError)
	default:
		_, _ = w.Write([]byte("ok"))
	}
}

func main() {
	klog.InitFlags(nil)
	flag.Parse()
	addr := *httpEndpoint
	if addr == "" {
		addr = net.JoinHostPort("", *healthPort)
	}
	http.HandleFunc("/healthz", healthz)
	klog.InfoS("serving /healthz", "address", addr, "csi", *csiAddress)
	klog.Fatal(http.ListenAndServe(addr, nil))
}
