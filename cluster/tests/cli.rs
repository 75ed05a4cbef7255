//! The `telegraft chat` client against a real one-node cluster: what it prints of
//! untrusted text (names, messages).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use telegraft::admin;
use telegraft::launcher::LocalCluster;

/// A one-node cluster in a temporary directory, with a leader.
struct Node {
    /// Declared first, so the node is killed before its directory is removed.
    nodes: LocalCluster,
    _dir: tempfile::TempDir,
}

impl Node {
    async fn start() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addrs = BTreeMap::from([(1, format!("127.0.0.1:{port}"))]);
        let nodes = LocalCluster::start_on(
            Path::new(env!("CARGO_BIN_EXE_telegraft")),
            addrs,
            dir.path(),
            &[],
        )
        .expect("start a telegraft node");
        admin::wait_for_leader(&nodes.running_addrs(), Duration::from_secs(15))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        Node { nodes, _dir: dir }
    }

    /// Runs `telegraft chat --endpoint NODE <args>` to completion.
    fn chat(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_telegraft"))
            .args(["chat", "--endpoint", &self.nodes.addrs[&1]])
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs a chat command that must succeed; returns its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.chat(args);
        assert!(
            out.status.success(),
            "telegraft chat {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// The id a `telegraft chat create-*` printed (`user_id 3`, `chat_id 4`).
fn id(out: &str) -> String {
    out.split_whitespace().nth(1).unwrap().to_string()
}

/// No byte that a terminal would act on, and no invisible character: what is printed is
/// what is shown. Line breaks between records are the printer's own.
fn assert_printable(what: &str, bytes: &[u8]) {
    let text = std::str::from_utf8(bytes).unwrap();
    for line in text.lines() {
        assert!(
            !line.chars().any(telegraft::proto::text::is_hidden),
            "{what} printed a raw control or invisible character: {line:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_refuses_hidden_names_and_escapes_what_it_prints() {
    let node = Node::start().await;

    // Names with control or invisible characters are refused, and the refusal itself is
    // printed without them.
    for bad in ["ann\u{1b}[2J", "a\u{200b}nn", "\u{202e}nna", "ann\n"] {
        let out = node.chat(&["create-user", bad]);
        assert!(!out.status.success(), "{bad:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("InvalidArgument"), "{err}");
        assert_printable("an error", &out.stderr);
    }

    // Message content may hold any character; the CLI escapes what it prints.
    let user = id(&node.ok(&["create-user", "ann"]));
    let chat = id(&node.ok(&["create-chat", &user, "general"]));
    let hostile = "red\u{1b}[31m bell\u{7} two\nlines \u{202e}txet desrever\u{200b}";
    node.ok(&["send-message", &user, &chat, hostile]);
    let out = node.ok(&["get-messages", &user]);
    assert_printable("get-messages", out.as_bytes());
    assert!(
        out.contains("red\\u{1b}[31m bell\\u{7} two\\nlines \\u{202e}txet desrever\\u{200b}"),
        "the content is shown escaped: {out}"
    );
    assert_eq!(out.lines().count(), 1, "one line per message: {out}");
    let users = node.ok(&["get-chat-users", &chat]);
    assert_eq!(users.trim(), format!("{user} ann"));
}

/// `get-messages` pages through the whole of a user's chats, in commit order, however small
/// the pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_messages_pages_through_everything() {
    let node = Node::start().await;
    let user = id(&node.ok(&["create-user", "ann"]));
    let chat = id(&node.ok(&["create-chat", &user, "general"]));
    for i in 0..25 {
        node.ok(&["send-message", &user, &chat, &format!("m{i}")]);
    }
    let out = node.ok(&["get-messages", &user, "--page-size", "10"]);
    let contents: Vec<&str> = out
        .lines()
        .map(|l| l.rsplit(": ").next().unwrap())
        .collect();
    let want: Vec<String> = (0..25).map(|i| format!("m{i}")).collect();
    assert_eq!(contents, want, "{out}");
    // After the 20th message's commit time, the last five.
    let line = out.lines().nth(19).unwrap();
    let at = line
        .split(" at ")
        .nth(1)
        .unwrap()
        .split([' ', ':'])
        .next()
        .unwrap();
    let (secs, micros) = at.split_once('.').unwrap();
    let us = secs.parse::<i64>().unwrap() * 1_000_000 + micros.parse::<i64>().unwrap();
    let tail = node.ok(&["get-messages", &user, "--after-us", &us.to_string()]);
    assert_eq!(tail.lines().count(), 5, "{tail}");
}
