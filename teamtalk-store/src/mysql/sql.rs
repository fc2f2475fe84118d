//! Static SQL for variable-length id lists and the eight message shards.
//!
//! The original tables need `IN (…)` lists and shard-dependent table names
//! (`IMMessage_{relateId % 8}`). Building such SQL at run time is what made the original
//! injectable; here every variant is a compile-time constant: an `IN` list comes in
//! [`CHUNKS`] sizes (padded by repeating its last id), a sharded statement in 8 copies.

/// Sizes of the `IN (?, …)` lists; longer lists are split.
pub(super) const CHUNKS: [usize; 4] = [1, 8, 32, 128];

macro_rules! params {
    (1) => {
        "?"
    };
    (8) => {
        "?,?,?,?,?,?,?,?"
    };
    (32) => {
        concat!(
            params!(8),
            ",",
            params!(8),
            ",",
            params!(8),
            ",",
            params!(8)
        )
    };
    (128) => {
        concat!(
            params!(32),
            ",",
            params!(32),
            ",",
            params!(32),
            ",",
            params!(32)
        )
    };
}

/// `[head (?) tail, head (?,…×8) tail, …]` for every size of [`CHUNKS`].
macro_rules! in_list {
    ($head:expr, $tail:expr) => {
        [
            concat!($head, "(", params!(1), ")", $tail),
            concat!($head, "(", params!(8), ")", $tail),
            concat!($head, "(", params!(32), ")", $tail),
            concat!($head, "(", params!(128), ")", $tail),
        ]
    };
}

/// The statement for each of the 8 shards: `head {table}{0..7} tail`.
macro_rules! sharded {
    ($head:expr, $table:expr, $tail:expr) => {
        [
            concat!($head, $table, "0", $tail),
            concat!($head, $table, "1", $tail),
            concat!($head, $table, "2", $tail),
            concat!($head, $table, "3", $tail),
            concat!($head, $table, "4", $tail),
            concat!($head, $table, "5", $tail),
            concat!($head, $table, "6", $tail),
            concat!($head, $table, "7", $tail),
        ]
    };
}

/// A sharded statement with an `IN` list: `[shard][chunk size]`.
macro_rules! sharded_in_list {
    ($head:expr, $table:expr, $mid:expr, $tail:expr) => {
        [
            in_list!(concat!($head, $table, "0", $mid), $tail),
            in_list!(concat!($head, $table, "1", $mid), $tail),
            in_list!(concat!($head, $table, "2", $mid), $tail),
            in_list!(concat!($head, $table, "3", $mid), $tail),
            in_list!(concat!($head, $table, "4", $mid), $tail),
            in_list!(concat!($head, $table, "5", $mid), $tail),
            in_list!(concat!($head, $table, "6", $mid), $tail),
            in_list!(concat!($head, $table, "7", $mid), $tail),
        ]
    };
}

/// Row counts of the multi-row `INSERT`s; more rows are split (largest first).
pub(super) const ROWS: [usize; 3] = [1, 8, 32];

/// `row` repeated 1, 8 or 32 times, comma-separated.
macro_rules! values {
    ($row:expr, 1) => {
        $row
    };
    ($row:expr, 8) => {
        concat!($row, ",", $row, ",", $row, ",", $row, ",", $row, ",", $row, ",", $row, ",", $row)
    };
    ($row:expr, 32) => {
        concat!(
            values!($row, 8),
            ",",
            values!($row, 8),
            ",",
            values!($row, 8),
            ",",
            values!($row, 8)
        )
    };
}

/// `INSERT INTO {table}{0..7} {columns} VALUES row,…` for each shard and each size of
/// [`ROWS`]: `[shard][size]`.
macro_rules! sharded_insert {
    ($table:expr, $columns:expr, $row:expr) => {
        [
            sharded_insert!(@sizes $table, "0", $columns, $row),
            sharded_insert!(@sizes $table, "1", $columns, $row),
            sharded_insert!(@sizes $table, "2", $columns, $row),
            sharded_insert!(@sizes $table, "3", $columns, $row),
            sharded_insert!(@sizes $table, "4", $columns, $row),
            sharded_insert!(@sizes $table, "5", $columns, $row),
            sharded_insert!(@sizes $table, "6", $columns, $row),
            sharded_insert!(@sizes $table, "7", $columns, $row),
        ]
    };
    (@sizes $table:expr, $shard:expr, $columns:expr, $row:expr) => {
        [
            concat!("INSERT INTO ", $table, $shard, " ", $columns, " VALUES ", values!($row, 1)),
            concat!("INSERT INTO ", $table, $shard, " ", $columns, " VALUES ", values!($row, 8)),
            concat!("INSERT INTO ", $table, $shard, " ", $columns, " VALUES ", values!($row, 32)),
        ]
    };
}

/// Splits `n` rows into statement sizes of [`ROWS`], largest first; yields (index into
/// `ROWS`, row count).
pub(super) fn row_chunks(mut n: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (index, &size) in ROWS.iter().enumerate().rev() {
        while n >= size {
            out.push((index, size));
            n -= size;
        }
    }
    out
}

/// Splits `ids` into chunks, each padded (by repeating its last id) to a size of [`CHUNKS`];
/// yields (index into `CHUNKS`, padded ids).
pub(super) fn chunks(ids: &[u32]) -> Vec<(usize, Vec<u32>)> {
    let [.., largest] = CHUNKS;
    let mut out = Vec::new();
    for chunk in ids.chunks(largest) {
        let (index, size) = CHUNKS
            .iter()
            .copied()
            .enumerate()
            .find(|&(_, n)| n >= chunk.len())
            .unwrap_or((CHUNKS.len() - 1, largest));
        let mut padded = chunk.to_vec();
        if let Some(&last) = chunk.last() {
            padded.resize(size, last);
        }
        out.push((index, padded));
    }
    out
}

/// The statement of `table` for the shard of a relation or group id (`id % 8`).
pub(super) fn shard<T: Copy>(table: &[T; 8], id: u32) -> T {
    let [t0, t1, t2, t3, t4, t5, t6, t7] = *table;
    match id % 8 {
        0 => t0,
        1 => t1,
        2 => t2,
        3 => t3,
        4 => t4,
        5 => t5,
        6 => t6,
        _ => t7,
    }
}

/// The statement of `table` for an `IN` list of size index `index` (from [`chunks`]).
pub(super) fn sized(table: &[&'static str; 4], index: usize) -> &'static str {
    let [s1, s8, s32, s128] = *table;
    match index {
        0 => s1,
        1 => s8,
        2 => s32,
        _ => s128,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_complete() {
        let q = in_list!("SELECT id FROM IMUser WHERE id IN ", " ORDER BY id");
        assert_eq!(q[0], "SELECT id FROM IMUser WHERE id IN (?) ORDER BY id");
        assert_eq!(q[3].matches('?').count(), 128);
        let s = sharded!("SELECT * FROM ", "IMMessage_", " WHERE relateId = ?");
        assert_eq!(s[5], "SELECT * FROM IMMessage_5 WHERE relateId = ?");
        let si = sharded_in_list!("SELECT * FROM ", "IMMessage_", " WHERE msgId IN ", "");
        assert_eq!(
            si[7][1],
            "SELECT * FROM IMMessage_7 WHERE msgId IN (?,?,?,?,?,?,?,?)"
        );
    }

    #[test]
    fn multi_row_inserts() {
        let q: [[&str; 3]; 8] = sharded_insert!("IMMessage_", "(a, b)", "(?, 0)");
        assert_eq!(q[3][0], "INSERT INTO IMMessage_3 (a, b) VALUES (?, 0)");
        assert_eq!(q[7][1].matches("(?, 0)").count(), 8);
        assert_eq!(q[0][2].matches('?').count(), 32);
        assert!(row_chunks(0).is_empty());
        assert_eq!(row_chunks(1), vec![(0, 1)]);
        assert_eq!(
            row_chunks(45),
            vec![(2, 32), (1, 8), (0, 1), (0, 1), (0, 1), (0, 1), (0, 1)]
        );
        assert_eq!(row_chunks(64), vec![(2, 32), (2, 32)]);
    }

    #[test]
    fn chunks_pad_and_split() {
        assert!(chunks(&[]).is_empty());
        assert_eq!(chunks(&[5]), vec![(0, vec![5])]);
        assert_eq!(chunks(&[1, 2, 3]), vec![(1, vec![1, 2, 3, 3, 3, 3, 3, 3])]);
        let many: Vec<u32> = (0..280).collect(); // 128 + 128 + 24
        let split = chunks(&many);
        assert_eq!(
            split
                .iter()
                .map(|(s, ids)| (*s, ids.len()))
                .collect::<Vec<_>>(),
            vec![(3, 128), (3, 128), (2, 32)]
        );
        assert_eq!(shard(&[0, 1, 2, 3, 4, 5, 6, 7], 17), 1);
        assert_eq!(sized(&["a", "b", "c", "d"], 3), "d");
    }
}
