#!/usr/bin/env bash
# Build etcd, kube-apiserver and kube-controller-manager for the cluster tests from their official
# Go modules, into a cache folder outside the checkout. Binaries already there are reused.
#
# KUBERNETES_VERSION below is the only pin: the tests read it from this file, and the etcd version
# is the one that k8s.io/kubernetes requires at that release.
# Output folder: $POPNAS_KUBE_BIN, default $HOME/.cache/popnas/kube-$KUBERNETES_VERSION.
# Needs Go at least as new as the `go` line of k8s.io/kubernetes's go.mod (go 1.26.0 for v1.36.3),
# from $GO, PATH or /usr/local/go/bin, and the Go module proxy.
set -euo pipefail

KUBERNETES_VERSION=v1.36.3

bin_dir=${POPNAS_KUBE_BIN:-$HOME/.cache/popnas/kube-$KUBERNETES_VERSION}
binaries=(etcd kube-apiserver kube-controller-manager)

all_present=true
for name in "${binaries[@]}"; do
  [ -x "$bin_dir/$name" ] || all_present=false
done
if $all_present; then
  echo "build-binaries: reusing the binaries in $bin_dir"
  exit 0
fi

go=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
[ -x "$go" ] || { echo "build-binaries: Go not found; install Go or set GO to the go binary" >&2; exit 1; }
echo "build-binaries: building Kubernetes $KUBERNETES_VERSION with $("$go" version) into $bin_dir"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CGO_ENABLED=0 GOFLAGS=-mod=mod

# The go.mod of k8s.io/kubernetes gives the Go version, the etcd release and the staging modules.
kube_mod=$("$go" mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" \
  | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
[ -f "$kube_mod" ] || { echo "build-binaries: go.mod of k8s.io/kubernetes@$KUBERNETES_VERSION not found" >&2; exit 1; }
go_line=$(grep -m1 '^go ' "$kube_mod")
godebug_line=$(grep -m1 '^godebug ' "$kube_mod" || true)
etcd_version=$(awk '$1 == "go.etcd.io/etcd/server/v3" && $2 ~ /^v3/ { print $2; exit }' "$kube_mod")
[ -n "$etcd_version" ] || { echo "build-binaries: no go.etcd.io/etcd/server/v3 requirement in $kube_mod" >&2; exit 1; }
# Staging modules are published as v0.<minor>.<patch> of the same release, for example k8s.io/api
# v0.36.3 for Kubernetes v1.36.3.
staging_version=v0.${KUBERNETES_VERSION#v1.}
staging_modules=$(awk '$2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }' "$kube_mod")

# One wrapper module per program, so that etcd links the dependency versions of its own release.
# The replace directives of k8s.io/kubernetes apply only when it is the main module, so the
# wrapper maps every staging module to its published version itself.
mkdir -p "$work/kube" "$work/etcd" "$work/out"
{
  echo "module popnas.test/kube-binaries"
  echo
  echo "$go_line"
  [ -z "$godebug_line" ] || echo "$godebug_line"
  echo
  echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
  echo
  echo "tool ("
  echo "	k8s.io/kubernetes/cmd/kube-apiserver"
  echo "	k8s.io/kubernetes/cmd/kube-controller-manager"
  echo ")"
  echo
  echo "replace ("
  for module in $staging_modules; do
    echo "	$module => $module $staging_version"
  done
  echo ")"
} > "$work/kube/go.mod"
{
  echo "module popnas.test/etcd-binary"
  echo
  echo "go ${go_line#go }"
  echo
  echo "require go.etcd.io/etcd/server/v3 $etcd_version"
  echo
  echo "tool go.etcd.io/etcd/server/v3"
} > "$work/etcd/go.mod"

build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
minor=${KUBERNETES_VERSION#v1.}
minor=${minor%%.*}
version_package=k8s.io/component-base/version
kube_ldflags="-s -w -X $version_package.gitVersion=$KUBERNETES_VERSION -X $version_package.gitMajor=1"
kube_ldflags+=" -X $version_package.gitMinor=$minor -X $version_package.gitTreeState=clean"
kube_ldflags+=" -X $version_package.buildDate=$build_date"

# One program at a time: a kube-apiserver link alone takes about 2 GiB of memory.
started=$SECONDS
echo "build-binaries: etcd $etcd_version"
(cd "$work/etcd" && "$go" mod tidy && "$go" build -trimpath -ldflags "-s -w" -o "$work/out/etcd" go.etcd.io/etcd/server/v3)
(cd "$work/kube" && "$go" mod tidy)
for name in kube-apiserver kube-controller-manager; do
  echo "build-binaries: $name $KUBERNETES_VERSION"
  (cd "$work/kube" && "$go" build -trimpath -ldflags "$kube_ldflags" -o "$work/out/$name" "k8s.io/kubernetes/cmd/$name")
done

mkdir -p "$bin_dir"
for name in "${binaries[@]}"; do
  mv -f "$work/out/$name" "$bin_dir/$name"
done
echo "build-binaries: built ${binaries[*]} in $((SECONDS - started)) s into $bin_dir"
