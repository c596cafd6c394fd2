// csi-node-driver-registrar stand-in for the test cluster: the real one is not served by the Go
// module proxy (and no container registry is reachable here). It keeps the upstream command
// line and behaviour that the node DaemonSet relies on: it asks the driver for its name,
// serves kubelet's plugin-registration API on <plugin-registration-path>/<driver>-reg.sock,
// writes the registration probe file <dir of kubelet-registration-path>/registration when
// kubelet calls GetInfo, exits when kubelet reports a failed registration, and with
// --mode=kubelet-registration-probe only checks that file (the liveness probe).
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/kubernetes-csi/csi-lib-utils/connection"
	"github.com/kubernetes-csi/csi-lib-utils/rpc"
	"google.golang.org/grpc"
	"k8s.io/klog/v2"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

var (
	csiAddress      = flag.String("csi-address", "/run/csi/socket", "the driver's CSI socket, as this container sees it")
	registrationDir = flag.String("plugin-registration-path", "/registration", "kubelet's plugin registration directory")
	kubeletPath     = flag.String("kubelet-registration-path", "", "the driver's CSI socket, as kubelet on the host sees it")
	mode            = flag.String("mode", "registration", "registration or kubelet-registration-probe")
	timeout         = flag.Duration("timeout", time.Second, "timeout of the GetPluginInfo call")
	_               = flag.String("http-endpoint", "", "accepted for compatibility; no HTTP server")
	_               = flag.Int("health-port", 0, "accepted for compatibility; no HTTP server")
)

type registrar struct {
	registerapi.UnimplementedRegistrationServer
	driver, probeFile string
}

func (r *registrar) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	if err := touch(r.probeFile); err != nil {
		klog.ErrorS(err, "cannot create the registration probe file", "path", r.probeFile)
	}
	return &registerapi.PluginInfo{
		Type: registerapi.CSIPlugin, Name: r.driver, Endpoint: *kubeletPath, SupportedVersions: []string{"1.0.0"},
	}, nil
}

func (r *registrar) NotifyRegistrationStatus(
	_ context.Context, st *registerapi.RegistrationStatus,
) (*registerapi.RegistrationStatusResponse, error) {
	if !st.PluginRegistered {
		klog.ErrorS(nil, "kubelet refused the registration; exiting so that the container restarts", "error", st.Error)
		os.Exit(1)
	}
	klog.InfoS("registered with kubelet", "driver", r.driver)
	return &registerapi.RegistrationStatusResponse{}, nil
}

func touch(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

func main() {
	klog.InitFlags(nil)
	flag.Parse()
	if *kubeletPath == "" {
		klog.Fatal("--kubelet-registration-path is required")
	}
	probeFile := filepath.Join(filepath.Dir(*kubeletPath), "registration")
	if *mode == "kubelet-registration-probe" {
		if st, err := os.Stat(probeFile); err != nil || !st.Mode().IsRegular() {
			fmt.Fprintf(os.Stderr, "kubelet plugin registration has not succeeded yet (%s: %v)\n", probeFile, err)
			os.Exit(1)
		}
		return
	}

	ctx := context.Background()
	conn, err := connection.ConnectWithoutMetrics(ctx, *csiAddress)
	if err != nil {
		klog.Fatalf("connecting to the driver at %s: %v", *csiAddress, err)
	}
	callCtx, cancel := context.WithTimeout(ctx, *timeout)
	driver, err := rpc.GetDriverName(callCtx, conn)
	cancel()
	_ = conn.Close()
	if err != nil {
		klog.Fatalf("asking the driver for its name: %v", err)
	}

	sock := filepath.Join(*registrationDir, driver+"-reg.sock")
	if err := os.Remove(sock); err != nil && !os.IsNotExist(err) {
		klog.Fatalf("removing a stale %s: %v", sock, err)
	}
	old := syscall.Umask(0o077)
	lis, err := net.Listen("unix", sock)
	syscall.Umask(old)
	if err != nil {
		klog.Fatalf("listening on %s: %v", sock, err)
	}
	srv := grpc.NewServer()
	registerapi.RegisterRegistrationServer(srv, &registrar{driver: driver, probeFile: probeFile})
	go func() {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		<-sigs
		_ = os.Remove(sock)
		os.Exit(0)
	}()
	klog.InfoS("serving the registration socket", "socket", sock, "driver", driver, "endpoint", *kubeletPath)
	if err := srv.Serve(lis); err != nil {
		klog.Fatalf("registration server: %v", err)
	}
}
