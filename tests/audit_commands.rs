//! The command functions the CLI calls: exit codes and argument checks.

mod audit_support;

use std::process::ExitCode;

use audit_support::*;
use careguard::audit::commands::{
    run_replay, run_report, run_verify, ReplayArgs, ReportArgs, ReportFormat, VerifyArgs,
};
use careguard::audit::Retention;

#[test]
fn verify_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), &config(dir.path(), Retention::Full), 4);
    let args = VerifyArgs {
        paths: vec![dir.path().to_path_buf()],
        json: false,
    };
    assert_eq!(run_verify(args.clone()).unwrap(), ExitCode::SUCCESS);
    let file = segment_files(dir.path()).remove(0);
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, &text[..text.len() - 10]).unwrap();
    assert_eq!(
        run_verify(args.clone()).unwrap(),
        ExitCode::from(2),
        "torn tail"
    );
    std::fs::write(
        &file,
        text.replacen("\"streamed\":true", "\"streamed\":false", 1),
    )
    .unwrap();
    assert_eq!(run_verify(args).unwrap(), ExitCode::from(1), "edited");
}

#[test]
fn replay_fails_on_change_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), &config(dir.path(), Retention::Full), 3);
    let rules = tempfile::tempdir().unwrap();
    // A rule folder without the stigma pack: the slur reply is no longer a violation.
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            let sub = rules.path().join(entry.file_name());
            std::fs::create_dir_all(&sub).unwrap();
            for f in std::fs::read_dir(entry.path()).unwrap() {
                let f = f.unwrap();
                if f.file_name() != "reply_stigma.toml" {
                    std::fs::copy(f.path(), sub.join(f.file_name())).unwrap();
                }
            }
        } else {
            std::fs::copy(entry.path(), rules.path().join(entry.file_name())).unwrap();
        }
    }
    let args = |rules: Option<&std::path::Path>, fail_on_change| ReplayArgs {
        paths: vec![dir.path().to_path_buf()],
        rules: rules.map(|r| r.to_path_buf()),
        json: true,
        fail_on_change,
        examples: 5,
    };
    assert_eq!(run_replay(args(None, true)).unwrap(), ExitCode::SUCCESS);
    assert_eq!(
        run_replay(args(Some(rules.path()), false)).unwrap(),
        ExitCode::SUCCESS
    );
    assert_eq!(
        run_replay(args(Some(rules.path()), true)).unwrap(),
        ExitCode::from(1)
    );
}

#[test]
fn report_rejects_bad_dates() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), &config(dir.path(), Retention::Hashed), 2);
    let args = |from: &str| ReportArgs {
        paths: vec![dir.path().to_path_buf()],
        from: Some(from.into()),
        to: None,
        format: ReportFormat::Csv,
    };
    assert_eq!(run_report(args("2020-01-01")).unwrap(), ExitCode::SUCCESS);
    let err = run_report(args("01/02/2020")).unwrap_err();
    assert!(err.to_string().contains("--from"), "{err}");
}
