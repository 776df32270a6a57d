// Command etcd is upstream etcd's server, built from the go.etcd.io/etcd/server/v3 module at the
// version this Kubernetes release is tested with (see go.mod). etcd's own main package lives in a
// module of its own; its whole body is this call.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
