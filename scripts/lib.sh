# Shared by the scripts (sourced).

# install_missing WHO PACKAGE...: installs the Debian packages (apt-get,
# as root) or, run by another user, says which and stops.
install_missing() {
  local who=$1
  shift
  (($#)) || return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "$who: missing $*: install them (apt-get install $*) or run as root" >&2
    exit 1
  fi
  echo "$who: installing $*" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
