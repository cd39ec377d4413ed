from sidecar.core.answers import parse_servers_state, parse_show_proc
from sidecar.core.model import ServerState

SHOW_PROC = """#<PID>          <type>          <reloads>       <uptime>        <version>
4816            master          3 [failed: 1]   0d00h00m37s     2.6.12-1+deb12u4
# workers
5081            worker          0               0d00h00m03s     2.6.12-1+deb12u4
4990            worker          1               0d00h00m13s     2.6.12-1+deb12u4
# programs
"""

HEADER = (
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_time_since_last_change srv_check_status srv_check_result "
    "srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id "
    "srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr "
    "srv_agent_addr srv_agent_port"
)
STATE = (
    "1\n"
    + HEADER
    + """
5 bk_F_S 1 s1 127.0.0.1 2 0 0 1 37 6 3 3 6 0 0 0 - 19001 - 0 0 - - 0
5 bk_F_S 2 s2 127.0.0.1 2 4 1 1 3 6 3 3 6 0 0 0 - 19002 - 0 0 - - 0
5 bk_F_S 3 s3 127.0.0.1 0 5 1 1 37 1 0 0 14 0 0 0 - 1 - 0 0 - - 0
5 bk_F_S 4 s4 10.0.0.1 2 16 1 1 37 1 0 0 14 0 0 0 - 80 - 0 0 - - 0
"""
)


def test_show_proc() -> None:
    info = parse_show_proc(SHOW_PROC)
    assert (info.master_pid, info.reloads, info.failed) == (4816, 3, 1)
    assert info.current_worker == 5081 and info.old_workers == (4990,)
    assert parse_show_proc("").master_pid == 0


def test_servers_state() -> None:
    servers = {a.server.name: a for a in parse_servers_state(STATE)}
    assert servers["s1"].server.state is ServerState.DRAIN  # weight 0
    assert servers["s2"].server.state is ServerState.READY  # config maint flag only
    assert servers["s3"].server.state is ServerState.MAINT
    assert servers["s4"].server.state is ServerState.DRAIN  # drained by hand (FDRAIN)
    assert servers["s2"].server.port == 19002 and servers["s2"].backend == "bk_F_S"
