// Miner signatures in executables, for `miner.binary` (ebpfguard/detect/miner_binary.py).
//
// Rules as data in YARA's language, run by yara-x (linear-time, safe on hostile files). Each
// rule needs strings of two kinds, so a binary that only mentions one thing (a wallet app
// naming an algorithm, a protocol library naming a stratum method) does not match. Sources:
// XMRig (src/base/kernel/config/usage.h, src/net/strategies/DonateStrategy.cpp,
// src/base/net/stratum/EthStratumClient.cpp), cpuminer-opt (util.c: stratum_subscribe,
// stratum_authorize), ethminer (libpoolprotocols/stratum/EthStratumClient.cpp), the Stratum
// wiki (https://en.bitcoin.it/wiki/Stratum_mining_protocol), NiceHash's EthereumStratum/1.0.0,
// EIP-1571, and Grin's doc/stratum.md. Add your own rules in a file listed in
// `miner_yara_files` (a user rules file's `lists:`).

rule miner_xmrig_family
{
    meta:
        description = "XMRig or a fork: its name beside its donation servers or miner-only options"
        source = "https://github.com/xmrig/xmrig/blob/master/src/base/kernel/config/usage.h"
    strings:
        $name = "xmrig" nocase
        $donate_v2 = "donate.v2.xmrig.com"
        $donate_ssl = "donate.ssl.xmrig.com"
        $opt_donate = "--donate-level"
        $opt_donate_proxy = "donate-over-proxy"
        $opt_1gb = "randomx-1gb-pages"
        $opt_threads = "cpu-max-threads-hint"
        $opt_wrmsr = "randomx-wrmsr"
    condition:
        any of ($donate_*) or ($name and any of ($opt_*))
}

rule miner_stratum_client
{
    meta:
        description = "A stratum mining client: pool methods beside a stratum URL scheme or protocol tag"
        source = "https://en.bitcoin.it/wiki/Stratum_mining_protocol"
    strings:
        $m_subscribe = "mining.subscribe"
        $m_authorize = "mining.authorize"
        $m_submit = "mining.submit"
        $m_notify = "mining.notify"
        $m_difficulty = "mining.set_difficulty"
        $m_extranonce = "mining.extranonce.subscribe"
        $m_eth_login = "eth_submitLogin"
        $m_eth_work = "eth_submitWork"
        $m_eth_hashrate = "eth_submitHashrate"
        $m_grin = "getjobtemplate"
        $m_keepalived = "keepalived"
        $s_tcp = "stratum+tcp://"
        $s_ssl = "stratum+ssl://"
        $s_tls = "stratum+tls://"
        $s_v1 = "stratum1+tcp://"
        $s_v2 = "stratum2+tcp://"
        $s_eth = "EthereumStratum/"
        $s_proxy = "ethproxy"
    condition:
        2 of ($m_*) and any of ($s_*)
}

rule miner_pow_engine
{
    meta:
        description = "Proof-of-work hashing engines beside miner vocabulary (shares, hashrate, pool)"
        source = "https://xmrig.com/docs/algorithms"
    strings:
        $a_randomx = "RandomX"
        $a_cryptonight = "cryptonight" nocase
        $a_kawpow = "kawpow" nocase
        $a_ethash = "ethash" nocase
        $a_autolykos = "autolykos" nocase
        $a_kheavy = "kheavyhash" nocase
        $a_ghostrider = "ghostrider" nocase
        $a_chukwa = "argon2/chukwa"
        $a_cuckatoo = "cuckatoo" nocase
        $a_equihash = "equihash" nocase
        $w_accepted = "accepted" nocase
        $w_shares = "shares"
        $w_hashrate = "hashrate" nocase
        $w_pool = "pool"
        $w_diff = "difficulty"
    condition:
        3 of ($a_*) and 4 of ($w_*)
}

rule miner_brand
{
    meta:
        description = "A known miner's banner beside stratum or pool vocabulary"
        source = "https://github.com/trexminer/T-Rex, https://github.com/doktor83/SRBMiner-Multi, https://github.com/Lolliedieb/lolMiner-releases"
    strings:
        $b_srb = "SRBMiner"
        $b_lol = "lolMiner"
        $b_nb = "NBMiner"
        $b_trex = "T-Rex NVIDIA"
        $b_trm = "TeamRedMiner"
        $b_phoenix = "PhoenixMiner"
        $b_nano = "nanominer"
        $b_cpuminer = "cpuminer-opt"
        $b_gminer = "GMiner"
        $b_stak = "xmr-stak"
        $b_bz = "BzMiner"
        $b_wildrig = "WildRig"
        $b_ccminer = "ccminer"
        $b_ethminer = "ethminer"
        $p_tcp = "stratum+tcp"
        $p_ssl = "stratum+ssl"
        $p_subscribe = "mining.subscribe"
        $p_login = "eth_submitLogin"
        $p_hashrate = "hashrate" nocase
    condition:
        any of ($b_*) and 2 of ($p_*)
}
