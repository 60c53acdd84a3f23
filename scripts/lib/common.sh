# Shared by scripts/demo and scripts/test; source it, do not run it.

# find_go puts a Go toolchain on PATH. sudo resets PATH to secure_path,
# which rarely includes /usr/local/go/bin, so look in the usual places too.
find_go() {
	if command -v go >/dev/null 2>&1; then
		return 0
	fi
	local d
	for d in /usr/local/go/bin /usr/lib/go/bin "${SUDO_USER:+$(getent passwd "$SUDO_USER" | cut -d: -f6)/go/bin}" "$HOME/go/bin" /snap/bin; do
		if [ -n "$d" ] && [ -x "$d/go" ]; then
			export PATH="$d:$PATH"
			return 0
		fi
	done
	echo "Go not found: install Go 1.26 (https://go.dev/dl/) and put it on PATH" >&2
	return 1
}

# ensure_packages installs the Debian packages given as arguments that are
# not installed yet: `apt-get update` once, then one `apt-get install`.
# Without apt-get (not Debian) or without root it only says what is missing.
ensure_packages() {
	local missing=() p
	for p in "$@"; do
		if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
			missing+=("$p")
		fi
	done
	[ "${#missing[@]}" -eq 0 ] && return 0
	if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" -ne 0 ]; then
		echo "warning: missing packages (install them yourself): ${missing[*]}" >&2
		return 0
	fi
	echo "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq </dev/null
	apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
}
