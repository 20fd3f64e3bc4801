//! The command line's help and error texts as snapshots (`tests/cmd/`),
//! so wording, prefixes and exit statuses cannot drift unnoticed.
//! Regenerate after a deliberate change with `TRYCMD=overwrite`.

#[test]
fn help_and_error_texts_match_their_snapshots() {
    trycmd::TestCases::new().case("tests/cmd/sealfs/*.toml");
}
