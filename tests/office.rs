//! Word, OpenDocument text, PowerPoint and EPUB uploads through the real
//! daemon (PostgreSQL + pgvector, Redis): each completes with its text
//! chunked and searchable, slides and chapters as pages; a zip bomb and an
//! archive that is none of them fail with a reason in words, and what is
//! not supported says what is. The files and their licences are listed in
//! `tests/data/office/SOURCES.md`.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use uuid::Uuid;

fn office(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/office")
            .join(name),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn office_documents_and_e_books_are_read_chunked_and_searchable() {
    let d = Daemon::start(Opts::default()).await;
    let user = Uuid::new_v4();
    let token = d.token(user);
    let cases = [
        (
            "api-for-odfpy.odt",
            "odt",
            "OpenDocumentText provides the text property",
        ),
        ("par-hlink-frags.docx", "docx", "Three with link to https://foo.com."),
        ("ph-inherit-props.pptx", "pptx", "Notes in modified position and size."),
        ("two-texts.epub", "epub", "The Debian Manifesto"),
    ];
    let mut pptx_id = None;
    for (name, kind, phrase) in cases {
        let started = std::time::Instant::now();
        let (document_id, job_id) = d.upload_one(&token, name, office(name)).await;
        let job = d.wait_job(&token, &job_id, Duration::from_secs(60)).await;
        eprintln!("FIGURE {name}: ingested in {} ms", started.elapsed().as_millis());
        assert_eq!(job["stage"], "completed", "{name}: {job}");
        let (_, doc) = d.get_json(&token, &format!("/api/v1/documents/{document_id}")).await;
        if kind == "pptx" {
            pptx_id = Some(serde_json::Value::String(document_id.clone()));
        }
        let stored = d.chunks(&document_id).await;
        let text: String = stored.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>().join("\n");
        assert!(text.contains(phrase), "{name}: “{phrase}” not in its chunks");
        match kind {
            // Slides and chapters are pages; Word and ODT texts have none.
            "pptx" => {
                let pages: Vec<Option<i32>> = stored.iter().map(|(_, p)| *p).collect();
                assert_eq!(doc["pages"], 2, "{doc}");
                assert!(pages.iter().all(|p| p.is_some()), "{pages:?}");
            }
            "epub" => {
                let russian = stored
                    .iter()
                    .find(|(c, _)| c.contains("Диссертация"))
                    .expect("the second text");
                let manifesto = stored.iter().find(|(c, _)| c.contains("The Debian Manifesto")).unwrap();
                assert!(
                    russian.1 > manifesto.1,
                    "chapters in spine order: {:?} {:?}",
                    manifesto.1,
                    russian.1
                );
            }
            _ => assert!(stored.iter().all(|(_, p)| p.is_none())),
        }
    }
    // Searchable like any document: a sentence of the presentation's notes
    // finds the presentation first.
    let (status, hits) = d
        .post_json(
            &token,
            "/api/v1/search",
            &serde_json::json!({"query": "Notes in modified position and size.", "k": 3}),
        )
        .await;
    assert_eq!(status, 200, "{hits}");
    assert_eq!(hits["results"][0]["document_id"], pptx_id.unwrap(), "{hits}");
}

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in entries {
        zip.start_file(*name, options).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap();
    out.into_inner()
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_and_unsupported_archives_fail_with_reasons_in_words() {
    let d = Daemon::start(Opts::default()).await;
    let user = Uuid::new_v4();
    let token = d.token(user);
    let bomb = zip_of(&[
        ("[Content_Types].xml", b"<Types/>"),
        ("word/document.xml", &vec![0u8; 64 << 20]),
    ]);
    let laughs = zip_of(&[(
        "word/document.xml",
        br#"<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><w:document xmlns:w="x"><w:body><w:p><w:r><w:t>&b;</w:t></w:r></w:p></w:body></w:document>"#,
    )]);
    let plain_zip = zip_of(&[("notes.txt", b"just a zip")]);
    let cases: [(&str, Vec<u8>, &[&str]); 4] = [
        (
            "report.docx",
            bomb,
            &["“word/document.xml” inflates to more than 32 MiB"],
        ),
        ("laughs.docx", laughs, &["declares XML entities, which we never expand"]),
        (
            "archive.docx",
            plain_zip,
            &[
                "is a ZIP archive that is not a Word, OpenDocument text, PowerPoint or EPUB file, not a Word document",
                "Word (.docx)",
            ],
        ),
        (
            "old.doc",
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1rest of an old Word file".to_vec(),
            &[
                "an old Microsoft Office document",
                "save it as .docx",
                "Word (.docx), OpenDocument text (.odt), PowerPoint (.pptx), EPUB, PNG, JPEG, TIFF and WebP images",
            ],
        ),
    ];
    let mut jobs = Vec::new();
    for (name, bytes, _) in &cases {
        jobs.push(d.upload_one(&token, name, bytes.clone()).await.1);
    }
    let (_, good) = d
        .upload_one(&token, "twolevellist.odt", office("twolevellist.odt"))
        .await;
    for ((name, _, expect), job_id) in cases.iter().zip(&jobs) {
        let job = d.wait_job(&token, job_id, Duration::from_secs(60)).await;
        assert_eq!(job["stage"], "failed", "{name}: {job}");
        assert_eq!(job["failed_stage"], "extracting", "{name}: {job}");
        let error = job["error"].as_str().unwrap();
        for e in *expect {
            assert!(error.contains(e), "{name}: “{error}” lacks “{e}”");
        }
    }
    let job = d.wait_job(&token, &good, Duration::from_secs(60)).await;
    assert_eq!(job["stage"], "completed", "{job}");
}
