//! One example of real use per command, shown at the end of `tapes <command> --help`.
//!
//! The binary attaches these to its clap commands in one place; the CLI tests check that every
//! command path clap knows has an entry here and that no entry names a command that is gone.

/// `(command path, example)`: the path is the subcommand names after `tapes`, space-separated.
pub const EXAMPLES: &[(&str, &str)] = &[
    ("init", "tapes init --name alice --email alice@example.com"),
    ("id", "tapes id --json"),
    ("id export", "tapes id export -o alice.tapes-id"),
    ("import", "tapes import ~/.claude/projects"),
    ("sessions", "tapes sessions --project billing"),
    ("show", "tapes show 3f2a9c"),
    ("log", "tapes log --graph 3f2a9c"),
    ("fsck", "tapes fsck"),
    ("rm", "tapes rm 3f2a9c --everywhere"),
    ("gc", "tapes gc"),
    (
        "completions",
        "tapes completions bash > ~/.local/share/bash-completion/completions/tapes",
    ),
    ("man", "tapes man > tapes.1"),
    (
        "branch",
        "tapes branch 3f2a9c --at 12 --alias retry --platform claude --resume",
    ),
    (
        "fork",
        "tapes fork 3f2a9c --at 20 --alias bobs-approach --platform codex",
    ),
    (
        "checkout",
        "tapes checkout 3f2a9c --platform gemini --into ~/src/app",
    ),
    ("status", "tapes status --fetch"),
    ("remote", "tapes remote add nas /mnt/nas/alice-tapes"),
    ("remote add", "tapes remote add nas /mnt/nas/alice-tapes"),
    ("remote list", "tapes remote list"),
    ("remote remove", "tapes remote remove nas"),
    (
        "pull",
        "tapes pull 3f2a9c --from nas --platform claude --resume",
    ),
    ("push", "tapes push nas 3f2a9c"),
    ("serve", "tapes serve --bind 0.0.0.0:7447"),
    ("fetch", "tapes fetch --all"),
    (
        "relay",
        "tapes relay --data /srv/tapes-relay --http 0.0.0.0:8080",
    ),
    (
        "relay register",
        "tapes relay register relay --team platform",
    ),
    ("storage", "tapes storage status"),
    ("storage status", "tapes storage status --offline"),
    ("storage sync", "tapes storage sync"),
    ("storage set-provider", "tapes storage set-provider hybrid"),
    (
        "storage configure",
        "tapes storage configure --relay relay --sync-interval 5m",
    ),
    ("sync", "tapes sync --team platform"),
    ("peers", "tapes peers --wait 5"),
    ("share", "tapes share 3f2a9c --team platform --expires 7d"),
    ("unshare", "tapes unshare 3f2a9c --public"),
    ("audit", "tapes audit --team platform --since 7d"),
    ("audit verify", "tapes audit verify"),
    ("shared", "tapes shared --sharer alice --since 7d"),
    ("config", "tapes config set default-visibility.billing team"),
    (
        "config set",
        "tapes config set default-visibility.billing team:platform",
    ),
    ("config get", "tapes config get default-visibility.billing"),
    ("config list", "tapes config list"),
    ("team", "tapes team create platform"),
    ("team create", "tapes team create platform"),
    (
        "team invite",
        "tapes team invite --team platform --expires 2d --email bob@example.com",
    ),
    ("team invites", "tapes team invites --team platform"),
    ("team join", "tapes team join --answer join-platform.answer"),
    ("team accept", "tapes team accept join-platform.request"),
    ("team list", "tapes team list"),
    ("team members", "tapes team members --team platform"),
    ("team remove", "tapes team remove bob --team platform"),
    ("team leave", "tapes team leave --team platform"),
    ("team rotate", "tapes team rotate --team platform"),
    (
        "team resolve",
        "tapes team resolve --keep ours --team platform",
    ),
    (
        "team promote",
        "tapes team promote bob --role admin --team platform",
    ),
    ("bundle", "tapes bundle create --since 7d -o week.tape"),
    (
        "bundle create",
        "tapes bundle create --team platform --since 7d -o week.tape",
    ),
    ("bundle verify", "tapes bundle verify week.tape"),
    ("bundle import", "tapes bundle import week.tape"),
    ("export", "tapes export --since 30d -o sessions.csv"),
    ("search", "tapes search rate limit --since 7d"),
    ("deck", "tapes deck project:billing since:7d"),
    ("web", "tapes web --open"),
    ("stats", "tapes stats --since 7d --by model"),
    ("pricing", "tapes pricing --file prices.json"),
];

/// The example for a command path (`"team invite"`), if the table has one.
pub fn example(path: &str) -> Option<&'static str> {
    EXAMPLES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, example)| *example)
}
