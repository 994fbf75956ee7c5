//! Where in the configuration a value sits, made into its JSON path text only when a problem is
//! told: formatting every element's path up front (`resources[3].spec.http[2].route[0].weight`)
//! was 15% of a large load's instructions, and almost every path is never shown.

use std::fmt;

#[derive(Clone, Copy)]
pub(crate) enum Path<'a> {
    Text(&'a str),
    /// `parent.name`; `name` may itself hold dots (`destination.port.number`).
    Field(&'a Path<'a>, &'a str),
    /// `parent.name[index]`
    Index(&'a Path<'a>, &'a str, usize),
}

impl<'a> Path<'a> {
    pub(crate) fn field<'b>(&'b self, name: &'b str) -> Path<'b> {
        Path::Field(self, name)
    }

    pub(crate) fn index<'b>(&'b self, name: &'b str, index: usize) -> Path<'b> {
        Path::Index(self, name, index)
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Text(text) => f.write_str(text),
            Path::Field(parent, name) => write!(f, "{parent}.{name}"),
            Path::Index(parent, name, index) => write!(f, "{parent}.{name}[{index}]"),
        }
    }
}

impl From<&Path<'_>> for String {
    fn from(path: &Path<'_>) -> String {
        path.to_string()
    }
}

impl From<Path<'_>> for String {
    fn from(path: Path<'_>) -> String {
        path.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::Path;

    #[test]
    fn a_path_reads_as_the_json_path_it_stands_for() {
        let vs = Path::Text("resources[3].spec");
        let route = vs.index("http", 2);
        let weight = route.index("route", 0);
        assert_eq!(
            weight.field("weight").to_string(),
            "resources[3].spec.http[2].route[0].weight"
        );
        assert_eq!(
            String::from(route.field("destination.port.number")),
            "resources[3].spec.http[2].destination.port.number"
        );
    }
}
