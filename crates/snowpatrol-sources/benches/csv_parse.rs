//! CSV parse throughput: the target is >= 1M metering rows/s in release.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use snowpatrol_detect::synthetic::SyntheticConfig;
use snowpatrol_sources::{SyntheticSource, parse_metering_csv, write_metering_csv};

fn bench(c: &mut Criterion) {
    let src = SyntheticSource::new(SyntheticConfig {
        warehouses: 24,
        days: 365,
        ..SyntheticConfig::default()
    });
    let rows = src.rows();

    // Both renderings operators will feed us: our own RFC 3339 writer and Snowflake's "+0000" form.
    let mut iso = Vec::new();
    write_metering_csv(rows, &mut iso).expect("write csv");
    let mut snowflake_style = Vec::with_capacity(iso.len() * 5 / 4);
    for (i, &b) in iso.iter().enumerate() {
        let digit = |j: usize| iso.get(j).is_some_and(u8::is_ascii_digit);
        match b {
            b'T' if i > 0 && digit(i - 1) && digit(i + 1) => snowflake_style.push(b' '),
            b'Z' if i > 0 && digit(i - 1) => snowflake_style.extend_from_slice(b".000 +0000"),
            _ => snowflake_style.push(b),
        }
    }

    let mut group = c.benchmark_group("parse_metering_csv");
    group.throughput(Throughput::Elements(rows.len() as u64));
    group.sample_size(20);
    for (name, data) in [("rfc3339", &iso), ("snowflake", &snowflake_style)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let parsed =
                    parse_metering_csv(&data[..], std::path::Path::new("<bench>")).expect("parse");
                assert_eq!(parsed.len(), rows.len());
                parsed
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
