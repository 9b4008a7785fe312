# A stand-in for OpenWrt's /lib/functions.sh (UCI) and procd helpers, enough to run an init
# script's start_service and service_triggers on any machine and print what procd would be
# told, one line per call. Source it, then the init script.
#   UCI_CONFIG_DIR   where config files are (default /etc/config)

config_load() {
	local __file="${UCI_CONFIG_DIR:-/etc/config}/$1"
	[ -f "$__file" ] || return 1
	# `config TYPE 'NAME'` and `option KEY 'VALUE'` lines, as uci keeps them.
	eval "$(awk '
		function unquote(s) { gsub(/^['\''"]|['\''"]$/, "", s); return s }
		$1 == "config" { section = unquote($3); sections = sections " " section
			printf "CONFIG_%s_TYPE=%s\n", section, unquote($2) }
		$1 == "option" { value = $0; sub(/^[ \t]*option[ \t]+[^ \t]+[ \t]+/, "", value)
			gsub(/'\''/, "", value); printf "CONFIG_%s_%s='\''%s'\''\n", section, $2, value }
		END { printf "CONFIG_SECTIONS='\''%s'\''\n", sections }' "$__file")"
}

config_foreach() {
	local __section
	for __section in $CONFIG_SECTIONS; do
		eval "[ \"\$CONFIG_${__section}_TYPE\" = \"$2\" ]" && "$1" "$__section"
	done
}

# Locals start with __ so they cannot hide the caller's variable of the same name.
config_get() {
	local __value
	eval "__value=\"\${CONFIG_${2}_${3}-}\""
	[ -n "$__value" ] || __value="$4"
	eval "$1=\"\$__value\""
}

config_get_bool() {
	local __flag
	config_get __flag "$2" "$3" "$4"
	case "$__flag" in
		1|on|true|yes|enabled) __flag=1 ;;
		*) __flag=0 ;;
	esac
	eval "$1=$__flag"
}

procd_open_instance() { echo "open_instance $1"; }
procd_set_param() { echo "set_param $*"; }
procd_close_instance() { echo "close_instance"; }
procd_add_reload_trigger() { echo "reload_trigger $*"; }
