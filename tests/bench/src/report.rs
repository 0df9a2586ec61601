//! Samples and how they are printed.

/// Several measurements of one thing.
pub struct Samples {
    sorted: Vec<f64>,
}

impl Samples {
    /// From values in any order.
    pub fn new(mut values: Vec<f64>) -> Samples {
        values.sort_by(f64::total_cmp);
        Samples { sorted: values }
    }

    pub fn median(&self) -> f64 {
        self.sorted[self.sorted.len() / 2]
    }

    pub fn min(&self) -> f64 {
        self.sorted[0]
    }

    pub fn max(&self) -> f64 {
        self.sorted[self.sorted.len() - 1]
    }

    /// One table row: label, median, min, max, in `unit`.
    pub fn row(&self, label: &str, unit: &str) -> String {
        format!(
            "| {label} | {} {unit} | {} {unit} | {} {unit} | {} |",
            fmt(self.median()),
            fmt(self.min()),
            fmt(self.max()),
            self.sorted.len()
        )
    }
}

/// A number with three significant digits and thousands separated.
pub fn fmt(value: f64) -> String {
    if value >= 1000.0 {
        let whole = value.round() as u64;
        let digits = whole.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(' ');
            }
            out.push(c);
        }
        out
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

/// A section's title, for figures that are not a table.
pub fn title(title: &str) {
    println!("\n### {title}\n");
}

/// Table header.
pub fn header(title: &str) {
    println!("\n### {title}\n\n| | median | min | max | runs |\n| --- | --- | --- | --- | --- |");
}
