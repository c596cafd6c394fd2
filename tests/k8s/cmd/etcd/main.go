// etcd for the test cluster: the upstream server's own entry point (go.etcd.io/etcd/v3, the
// module holding etcd's main package, cannot be required from another module).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
